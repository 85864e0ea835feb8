"""DICOM files to float images, and minimal DICOM writing for tests and mocks.

``read(path)`` returns ``(image, header)``: a single-frame grayscale image as
float32 ``(Rows, Columns)`` in [0, 1] where 0 is black as displayed (the
MONOCHROME2 sense), and the header fields kept for subgroup analysis.

Normalization, in the order of the DICOM grayscale pipeline (PS3.3 C.11):

1. Stored values ``s`` come from pydicom's decoder. Only the low ``BitsStored``
   bits of each ``BitsAllocated`` container are the value (PS3.5 8.1.1): old
   files carry overlays or garbage in the high bits. We mask them away for
   ``PixelRepresentation`` 0 and sign-extend from bit ``BitsStored - 1`` for 1.
   pydicom 3 already does this for native and RLE data; doing it again is
   idempotent and keeps us right whatever the decoder did.
2. Modality LUT (C.11.1): ``m = s * RescaleSlope + RescaleIntercept`` (1 and 0
   when absent), or the Modality LUT Sequence when present (C.11.1.1).
3. VOI LUT (C.11.2), when the file has one, maps ``m`` to [0, 1]:
   the VOI LUT Sequence (C.11.2.1.1) if present, its output divided by
   ``2**n - 1`` with ``n`` the third LUT Descriptor value; else the first
   window of WindowCenter ``c`` / WindowWidth ``w`` with VOILUTFunction
   (C.11.2.1.2): LINEAR ``clip((m - (c - 0.5)) / (w - 1) + 0.5, 0, 1)``,
   LINEAR_EXACT ``clip((m - c) / w + 0.5, 0, 1)``, SIGMOID
   ``1 / (1 + exp(-4 (m - c) / w))``.
4. Without a VOI LUT the whole storable range goes to [0, 1]:
   ``v = (m - lo) / (hi - lo)`` with ``lo, hi`` the least and greatest modality
   output over the storable values (``0 .. 2**B - 1`` unsigned,
   ``-2**(B-1) .. 2**(B-1) - 1`` signed, ``B = BitsStored``). So an 8-bit image
   reads as ``s / 255`` whatever its (positive) rescale, and a negative slope
   inverts, as the modality output it describes would display.
5. Photometric interpretation (C.7.6.3.1.2): MONOCHROME1 (minimum = white) is
   inverted, ``v -> 1 - v``; MONOCHROME2 is kept. Colour (RGB, YBR_*,
   PALETTE COLOR, SamplesPerPixel != 1) and multi-frame images are refused.

Compressed transfer syntaxes decode through pydicom's plugins; most need the
optional extra ``pip install 'saliency-jax[dicom-codecs]'`` (pylibjpeg and its
codecs). Every file that cannot be turned into an image raises `DicomError`
naming the file and the reason; a file that cannot be opened raises the usual
`OSError`.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi, get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from saliency_jax import io_utils

CODECS_EXTRA = "pip install 'saliency-jax[dicom-codecs]'"
GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")

_SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")
_DAYS_PER_YEAR = 365.25
# DICOM AS is 'nnnD|W|M|Y'; RSNA Pneumonia stores bare years ('58').
_AGE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([DWMY]?)\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"D": 1 / _DAYS_PER_YEAR, "W": 7 / _DAYS_PER_YEAR, "M": 1 / 12,
                   "Y": 1.0, "": 1.0}


class DicomError(ValueError):
  """A file that cannot be decoded; the message names the file and the reason."""


def read(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
  """Decodes one grayscale DICOM image (see the module docstring for the math).

  Args:
    path: a DICOM Part 10 file.

  Returns:
    ``(image, header)``: image (H, W) float32 in [0, 1], 0 = black as displayed
    (MONOCHROME2 sense); header as from `read_header`.

  Raises:
    DicomError: corrupt or truncated file, no pixel data, colour or
      multi-frame image, missing decoder for its transfer syntax, ... .
    OSError: the file cannot be opened.
  """
  name = os.fspath(path)
  try:
    ds = _dcmread(name, stop_before_pixels=False)
    header = _header(ds)
    _check_image(ds)
    stored = _stored_values(_decode(ds), ds)
    image = _display(stored, ds)
  except DicomError as e:
    raise DicomError(f"{name}: {e}") from e.__cause__
  except OSError:
    raise
  except Exception as e:  # pydicom/numpy on malformed content: one clear error
    raise DicomError(f"{name}: malformed DICOM ({type(e).__name__}: {e})") from e
  return image.astype(np.float32), header


def read_header(path: str | os.PathLike) -> dict[str, Any]:
  """The header dict of `read` without decoding pixels, for fast scans.

  Keys: ``view_position`` (str, '' if absent), ``sex`` (str, '' if absent),
  ``age`` (float years, nan if absent or unparseable), ``patient_id`` (str),
  ``rows``, ``columns`` (int, 0 if absent), ``photometric`` (str),
  ``bits_stored`` (int, 0 if absent), ``transfer_syntax`` (its name).

  Raises:
    DicomError: the file is not readable DICOM.
    OSError: the file cannot be opened.
  """
  name = os.fspath(path)
  try:
    return _header(_dcmread(name, stop_before_pixels=True))
  except DicomError as e:
    raise DicomError(f"{name}: {e}") from e.__cause__
  except OSError:
    raise
  except Exception as e:
    raise DicomError(f"{name}: malformed DICOM ({type(e).__name__}: {e})") from e


def parse_age(value: Any) -> float:
  """Age in years from DICOM AS ('058Y', '006M', '010W', '003D') or bare '58'; nan if not."""
  match = _AGE.match(str(value if value is not None else ""))
  if not match:
    return math.nan
  return float(match.group(1)) * _AGE_UNIT_YEARS[match.group(2).upper()]


def write(path: str | os.PathLike, stored: np.ndarray, *,
          photometric: str = "MONOCHROME2", bits_allocated: int | None = None,
          bits_stored: int | None = None, pixel_representation: int = 0,
          rescale_slope: float | None = None, rescale_intercept: float | None = None,
          window_center: float | Sequence[float] | None = None,
          window_width: float | Sequence[float] | None = None,
          view_position: str | None = None, sex: str | None = None,
          age: str | float | None = None, patient_id: str | None = None,
          transfer_syntax: str = ExplicitVRLittleEndian) -> None:
  """Writes a minimal single-frame grayscale Secondary Capture DICOM (Modality CR).

  The file is a pure function of the arguments (UIDs derive from its content),
  and is written atomically.

  Args:
    path: output file.
    stored: (H, W) integer *stored* values, written as given, including any
      bits above ``bits_stored`` (so tests can write overlay garbage).
    photometric: 'MONOCHROME1' or 'MONOCHROME2'.
    bits_allocated: 8, 16 or 32; default from ``stored.dtype`` (uint8 -> 8,
      uint16/int16 -> 16).
    bits_stored: default ``bits_allocated``.
    pixel_representation: 0 unsigned, 1 two's complement.
    rescale_slope, rescale_intercept: the Modality LUT (written when either
      is given; the other defaults to 1 or 0).
    window_center, window_width: a VOI window, or several (both or neither).
    view_position, sex, age, patient_id: header fields; ``age`` as an AS
      string (written verbatim, RSNA's bare '58' included) or years.
    transfer_syntax: a native syntax, or an encapsulated one pydicom can
      encode (RLE Lossless natively).

  Raises:
    ValueError: arguments that do not describe a valid image.
  """
  stored = np.asarray(stored)
  if stored.ndim != 2 or not np.issubdtype(stored.dtype, np.integer):
    raise ValueError(f"stored must be a 2-D integer array, got {stored.dtype} {stored.shape}")
  if photometric not in GRAYSCALE:
    raise ValueError(f"photometric must be one of {GRAYSCALE}, got {photometric!r}")
  if pixel_representation not in (0, 1):
    raise ValueError(f"pixel_representation must be 0 or 1, got {pixel_representation}")
  bits_allocated = bits_allocated or 8 * stored.dtype.itemsize
  bits_stored = bits_stored or bits_allocated
  if bits_allocated not in (8, 16, 32) or not 1 <= bits_stored <= bits_allocated:
    raise ValueError(f"bits_allocated={bits_allocated}, bits_stored={bits_stored}: "
                     "need bits_allocated in (8, 16, 32) and 1 <= bits_stored <= it")
  if (window_center is None) != (window_width is None):
    raise ValueError("window_center and window_width go together")
  syntax = UID(transfer_syntax)
  container = np.dtype(f"{'ui'[pixel_representation]}{bits_allocated // 8}")
  info = np.iinfo(container)
  if stored.size and (stored.min() < info.min or stored.max() > info.max):
    raise ValueError(f"stored values [{stored.min()}, {stored.max()}] do not fit "
                     f"{bits_allocated}-bit pixel_representation={pixel_representation}")
  pixels = stored.astype(container)

  # Every argument goes into the UIDs, so equal pixels with other headers differ.
  arguments = repr((pixels.shape, photometric, bits_stored, pixel_representation,
                    rescale_slope, rescale_intercept, window_center, window_width,
                    view_position, sex, age, patient_id, str(syntax)))
  digest = hashlib.sha256(pixels.tobytes() + arguments.encode()).hexdigest()
  ds = _image_dataset(pixels, syntax, photometric, bits_stored, pixel_representation,
                      digest)
  if rescale_slope is not None or rescale_intercept is not None:
    ds.RescaleSlope = _ds_number(1.0 if rescale_slope is None else rescale_slope)
    ds.RescaleIntercept = _ds_number(0.0 if rescale_intercept is None else rescale_intercept)
    ds.RescaleType = "US"  # unspecified units
  if window_center is not None:
    ds.WindowCenter = _ds_numbers(window_center)
    ds.WindowWidth = _ds_numbers(window_width)
  ds.PatientID = patient_id or ""
  ds.PatientSex = sex or ""
  if view_position is not None:
    ds.ViewPosition = view_position
  if age is not None:
    text = age if isinstance(age, str) else f"{int(round(age)):03d}Y"
    with pydicom_config.disable_value_validation():  # let RSNA's '58' through
      ds.PatientAge = text

  if syntax.is_encapsulated:
    ds.compress(syntax, pixels, generate_instance_uid=False)
  else:
    order = "<" if syntax.is_little_endian else ">"
    vr = "OB" if bits_allocated == 8 else "OW"
    ds.add_new("PixelData", vr, pixels.astype(container.newbyteorder(order)).tobytes())
  _save_atomic(ds, os.fspath(path))


def _dcmread(name: str, *, stop_before_pixels: bool) -> Dataset:
  try:
    return pydicom.dcmread(name, stop_before_pixels=stop_before_pixels)
  except InvalidDicomError as e:
    # pydicom's own text suggests force=True, which would parse junk as data.
    raise DicomError("not a DICOM Part 10 file: no 'DICM' prefix and file meta "
                     "information (empty, truncated or another format)") from e


def _header(ds: Dataset) -> dict[str, Any]:
  syntax = _transfer_syntax(ds)
  return {
      "view_position": _text(ds, "ViewPosition"),
      "sex": _text(ds, "PatientSex"),
      "age": parse_age(ds.get("PatientAge")),
      "patient_id": _text(ds, "PatientID"),
      "rows": _int(ds, "Rows"),
      "columns": _int(ds, "Columns"),
      "photometric": _text(ds, "PhotometricInterpretation"),
      "bits_stored": _int(ds, "BitsStored"),
      "transfer_syntax": syntax.name if syntax else "",
  }


def _transfer_syntax(ds: Dataset) -> UID | None:
  meta = getattr(ds, "file_meta", None)
  syntax = meta.get("TransferSyntaxUID") if meta is not None else None
  return UID(syntax) if syntax else None


def _text(ds: Dataset, keyword: str) -> str:
  value = ds.get(keyword)
  return "" if value is None else str(value).strip()


def _int(ds: Dataset, keyword: str, default: int = 0) -> int:
  value = ds.get(keyword)
  return default if value in (None, "") else int(value)


def _first_number(ds: Dataset, keyword: str, default: float | None) -> float | None:
  """A DS/IS element's first value (windows may be multi-valued); default if empty."""
  value = ds.get(keyword)
  if isinstance(value, MultiValue):
    value = value[0] if len(value) else None
  return default if value in (None, "") else float(value)


def _check_image(ds: Dataset) -> None:
  """Refuses what `read` cannot turn into one grayscale image."""
  if "PixelData" not in ds:
    other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
    if other:
      raise DicomError(f"{other[0]} is not supported, only integer Pixel Data")
    raise DicomError("no Pixel Data element (7FE0,0010): the file holds no image, "
                     "or it is truncated")
  photometric = _text(ds, "PhotometricInterpretation")
  if photometric not in GRAYSCALE:
    raise DicomError(f"unsupported Photometric Interpretation {photometric!r}; only "
                     f"grayscale {' and '.join(GRAYSCALE)} images are supported")
  samples = _int(ds, "SamplesPerPixel", 1)
  if samples != 1:
    raise DicomError(f"SamplesPerPixel={samples}; only grayscale (1 sample) images "
                     "are supported")
  frames = _int(ds, "NumberOfFrames", 1)
  if frames > 1:
    raise DicomError(f"multi-frame image (NumberOfFrames={frames}); only single-frame "
                     "images are supported")
  allocated, stored = _int(ds, "BitsAllocated"), _int(ds, "BitsStored")
  if not 1 <= stored <= allocated:
    raise DicomError(f"invalid BitsStored={stored} for BitsAllocated={allocated}")
  if _int(ds, "PixelRepresentation") not in (0, 1):
    raise DicomError(f"invalid PixelRepresentation={ds.PixelRepresentation}")
  if _int(ds, "Rows") < 1 or _int(ds, "Columns") < 1:
    raise DicomError(f"invalid image size Rows={ds.get('Rows')} Columns={ds.get('Columns')}")


def _decode(ds: Dataset) -> np.ndarray:
  """The stored values as pydicom decodes them, (Rows, Columns)."""
  syntax = _transfer_syntax(ds)
  if syntax is None:
    raise DicomError("no Transfer Syntax UID in the file meta information")
  described = f"transfer syntax '{syntax.name}' ({syntax})"
  try:
    decoder = get_decoder(syntax)
  except NotImplementedError as e:
    raise DicomError(f"{described} is not supported by pydicom") from e
  if not decoder.is_available:
    missing = "; ".join(decoder.missing_dependencies)
    raise DicomError(f"no decoder installed for {described}; install one with "
                     f"{CODECS_EXTRA} (pydicom plugins: {missing})")
  try:
    arr, _ = decoder.as_array(ds, raw=True)
  except Exception as e:
    raise DicomError(f"cannot decode the pixel data ({described}): "
                     f"{type(e).__name__}: {e}") from e
  shape = (_int(ds, "Rows"), _int(ds, "Columns"))
  if arr.shape != shape:
    raise DicomError(f"decoded pixel data has shape {arr.shape}, expected {shape}")
  return arr


def _storable_range(ds: Dataset) -> tuple[int, int]:
  """Least and greatest stored value that BitsStored/PixelRepresentation allow."""
  bits = _int(ds, "BitsStored")
  if _int(ds, "PixelRepresentation"):
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
  return 0, 2**bits - 1


def _stored_values(arr: np.ndarray, ds: Dataset) -> np.ndarray:
  """Keeps the low BitsStored bits (sign-extended if signed), as int64."""
  bits = _int(ds, "BitsStored")
  values = arr.astype(np.int64) & (2**bits - 1)
  if _int(ds, "PixelRepresentation"):
    values = np.where(values >= 2 ** (bits - 1), values - 2**bits, values)
  return values


def _modality(values: np.ndarray, ds: Dataset) -> np.ndarray:
  """PS3.3 C.11.1: the Modality LUT Sequence, else the rescale line; float64."""
  if ds.get("ModalityLUTSequence"):
    return apply_modality_lut(values, ds).astype(np.float64)
  slope = _first_number(ds, "RescaleSlope", 1.0)
  intercept = _first_number(ds, "RescaleIntercept", 0.0)
  return values * slope + intercept


def _modality_range(ds: Dataset) -> tuple[float, float]:
  """Least and greatest modality output over all storable values."""
  lo, hi = _storable_range(ds)
  inputs = [lo, hi]
  if ds.get("ModalityLUTSequence"):
    # A LUT need not be monotone: its range is the entries that storable values reach.
    entries, first = ds.ModalityLUTSequence[0].LUTDescriptor[:2]
    inputs += list(range(max(first, lo), min(first + (entries or 2**16) - 1, hi) + 1))
  out = _modality(np.asarray(inputs, dtype=np.int64), ds)
  return float(out.min()), float(out.max())


def _window(m: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
  """PS3.3 C.11.2.1.2-3: a VOI window mapping modality values to [0, 1]."""
  if function == "LINEAR":
    if width < 1:
      raise DicomError(f"WindowWidth={width} < 1 is invalid for VOILUTFunction LINEAR")
    if width == 1:  # a threshold: the formula's (w - 1) would divide by zero
      return (m > center - 0.5).astype(np.float64)
    return np.clip((m - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
  if width <= 0:
    raise DicomError(f"WindowWidth={width} <= 0 is invalid for VOILUTFunction {function}")
  if function == "LINEAR_EXACT":
    return np.clip((m - center) / width + 0.5, 0.0, 1.0)
  if function == "SIGMOID":
    return 1.0 / (1.0 + np.exp(-4.0 * (m - center) / width))
  raise DicomError(f"unsupported VOILUTFunction {function!r}; expected LINEAR, "
                   "LINEAR_EXACT or SIGMOID")


def _voi_lut(m: np.ndarray, ds: Dataset) -> np.ndarray:
  """PS3.3 C.11.2.1.1: the first VOI LUT Sequence item, its output scaled to [0, 1]."""
  entries, first, depth = ds.VOILUTSequence[0].LUTDescriptor[:3]
  entries = entries or 2**16
  # Pre-clip: pydicom indexes the LUT in uint16 and would wrap far-off inputs.
  indices = np.clip(np.rint(m), first, first + entries - 1).astype(np.int64)
  return apply_voi(indices, ds, 0).astype(np.float64) / (2**depth - 1)


def _has_voi_lut(ds: Dataset) -> bool:
  items = ds.get("VOILUTSequence")
  return bool(items) and "LUTDescriptor" in items[0] and "LUTData" in items[0]


def _display(stored: np.ndarray, ds: Dataset) -> np.ndarray:
  """Stored values -> [0, 1], 0 = black: modality, VOI or full range, polarity."""
  m = _modality(stored, ds)
  center = _first_number(ds, "WindowCenter", None)
  width = _first_number(ds, "WindowWidth", None)
  if _has_voi_lut(ds):
    v = _voi_lut(m, ds)
  elif center is not None and width is not None:
    function = _text(ds, "VOILUTFunction").upper() or "LINEAR"
    v = _window(m, center, width, function)
  else:
    lo, hi = _modality_range(ds)
    if hi <= lo:
      raise DicomError(f"the Modality LUT maps every stored value to {lo}")
    v = (m - lo) / (hi - lo)
  # Presentation LUT Shape is not applied on top: DX requires INVERSE exactly
  # when MONOCHROME1 (C.8.11.6.1.2), so it restates this same inversion.
  if _text(ds, "PhotometricInterpretation") == "MONOCHROME1":
    v = 1.0 - v
  return np.clip(v, 0.0, 1.0)


def _ds_number(x: float) -> str:
  # DS holds at most 16 characters; repr of a float may not fit.
  return f"{float(x):.10g}"


def _ds_numbers(x: float | Sequence[float]) -> str | list[str]:
  if isinstance(x, (int, float, np.number)):
    return _ds_number(x)
  return [_ds_number(v) for v in x]


def _image_dataset(pixels: np.ndarray, syntax: UID, photometric: str,
                   bits_stored: int, pixel_representation: int, digest: str) -> Dataset:
  """A Secondary Capture dataset with the Image Pixel module, no Pixel Data yet."""
  study, series, instance = (generate_uid(entropy_srcs=[digest, part])
                             for part in ("study", "series", "instance"))
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = _SECONDARY_CAPTURE
  meta.MediaStorageSOPInstanceUID = instance
  meta.TransferSyntaxUID = syntax
  ds = Dataset()
  ds.file_meta = meta
  ds.SOPClassUID, ds.SOPInstanceUID = _SECONDARY_CAPTURE, instance
  ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
  ds.Modality = "CR"
  ds.ConversionType = "WSD"
  ds.PatientName = ""
  ds.StudyDate = ds.StudyTime = ds.ReferringPhysicianName = ds.AccessionNumber = ""
  ds.StudyID = ds.SeriesNumber = ds.InstanceNumber = ""
  ds.PatientBirthDate = ""
  ds.SamplesPerPixel = 1
  ds.PhotometricInterpretation = photometric
  ds.Rows, ds.Columns = pixels.shape
  ds.BitsAllocated = 8 * pixels.dtype.itemsize
  ds.BitsStored = bits_stored
  ds.HighBit = bits_stored - 1
  ds.PixelRepresentation = pixel_representation
  return ds


def _save_atomic(ds: Dataset, path: str) -> None:
  with io_utils.atomic_path(path) as tmp:
    ds.save_as(tmp, enforce_file_format=True)
