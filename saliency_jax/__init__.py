"""saliency_jax: can a classifier's saliency maps be trusted to localize an abnormality?"""

__version__ = "0.1.0"
