"""DICOM decoding: round trips through `write`, the PS3.3 C.11 pipeline, bad files."""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_windowing, get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
                         ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless,
                         JPEGBaseline8Bit, JPEGLSLossless, RLELossless)

from saliency_jax.data import dicom
from saliency_jax.data.dicom import DicomError

SHAPE = (16, 24)  # not square, so a transposed read fails


def _edit(path, **attrs) -> None:
  """Rewrites a DICOM file with ``attrs`` set (None deletes), as other writers would."""
  ds = pydicom.dcmread(path)
  for keyword, value in attrs.items():
    if value is None:
      del ds[keyword]
    else:
      setattr(ds, keyword, value)
  ds.save_as(path)


def _plain(tmp_path, name="img.dcm", shape=SHAPE, **options):
  path = tmp_path / name
  stored = np.arange(math.prod(shape), dtype=np.uint16).reshape(shape) % 4096
  dicom.write(path, stored, bits_stored=12, **options)
  return path


def _dicom_linear(x, c, w):
  """PS3.3 C.11.2.1.2.1 piecewise, output range [0, 1]."""
  y = (x - (c - 0.5)) / (w - 1) + 0.5
  y = np.where(x <= c - 0.5 - (w - 1) / 2, 0.0, y)
  return np.where(x > c - 0.5 + (w - 1) / 2, 1.0, y)


def _dicom_linear_exact(x, c, w):
  """PS3.3 C.11.2.1.3.2, output range [0, 1]."""
  y = (x - c) / w + 0.5
  y = np.where(x <= c - w / 2, 0.0, y)
  return np.where(x > c + w / 2, 1.0, y)


def _dicom_sigmoid(x, c, w):
  """PS3.3 C.11.2.1.3.1, output range [0, 1]."""
  return 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))


# ----------------------------------------------------------------- round trips


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("dtype,bits", [(np.uint8, 8), (np.uint16, 12)])
@pytest.mark.parametrize("rescale", [None, (2.0, -1024.0)])
def test_quantized_image_reads_back(tmp_path, photometric, dtype, bits, rescale):
  v = np.random.default_rng(bits).uniform(size=SHAPE)
  top = 2**bits - 1
  shown = 1.0 - v if photometric == "MONOCHROME1" else v
  stored = np.rint(shown * top).astype(dtype)
  slope, intercept = rescale or (None, None)
  path = tmp_path / "x.dcm"
  dicom.write(path, stored, photometric=photometric, bits_stored=bits,
              rescale_slope=slope, rescale_intercept=intercept)
  image, header = dicom.read(path)
  assert image.dtype == np.float32 and image.shape == SHAPE
  np.testing.assert_allclose(image, v, rtol=0, atol=0.5 / top + 1e-6)
  assert header["photometric"] == photometric and header["bits_stored"] == bits
  assert (header["rows"], header["columns"]) == SHAPE


def test_negative_slope_inverts_within_unit_range(tmp_path):
  stored = np.arange(256, dtype=np.uint8).reshape(16, 16)
  dicom.write(tmp_path / "x.dcm", stored, rescale_slope=-3.0, rescale_intercept=7.0)
  image, _ = dicom.read(tmp_path / "x.dcm")
  np.testing.assert_allclose(image, 1.0 - stored / 255.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_signed_pixel_representation(tmp_path, photometric):
  stored = np.arange(-2048, 2048, 16, dtype=np.int16).reshape(16, 16)
  dicom.write(tmp_path / "x.dcm", stored, photometric=photometric, bits_stored=12,
              pixel_representation=1, rescale_slope=1.0, rescale_intercept=-1000.0)
  image, _ = dicom.read(tmp_path / "x.dcm")
  expected = (stored + 2048.0) / 4095.0
  if photometric == "MONOCHROME1":
    expected = 1.0 - expected
  np.testing.assert_allclose(image, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("signed", [False, True])
def test_bits_above_bits_stored_are_ignored(tmp_path, signed):
  rng = np.random.default_rng(1)
  low, high = (-2048, 2048) if signed else (0, 4096)
  value = rng.integers(low, high, size=SHAPE)
  garbage = rng.integers(1, 16, size=SHAPE)  # never 0: every pixel carries some
  raw = ((value & 0xFFF) | (garbage << 12)).astype(np.uint16)
  stored = raw.view(np.int16) if signed else raw
  dicom.write(tmp_path / "x.dcm", stored, bits_stored=12, pixel_representation=int(signed))
  image, _ = dicom.read(tmp_path / "x.dcm")
  np.testing.assert_allclose(image, (value - low) / 4095.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian,
                                    DeflatedExplicitVRLittleEndian, RLELossless])
def test_transfer_syntaxes_decode_to_the_same_image(tmp_path, syntax):
  stored = np.random.default_rng(2).integers(0, 4096, size=SHAPE).astype(np.uint16)
  options = dict(photometric="MONOCHROME1", bits_stored=12, rescale_slope=0.5,
                 rescale_intercept=10.0)
  dicom.write(tmp_path / "ref.dcm", stored, **options)
  dicom.write(tmp_path / "x.dcm", stored, transfer_syntax=syntax, **options)
  assert pydicom.dcmread(tmp_path / "x.dcm").file_meta.TransferSyntaxUID == syntax
  image, header = dicom.read(tmp_path / "x.dcm")
  np.testing.assert_array_equal(image, dicom.read(tmp_path / "ref.dcm")[0])
  assert header["transfer_syntax"] == syntax.name


def test_rle_file_is_really_compressed(tmp_path):
  stored = np.zeros((32, 32), np.uint8)  # one run per row: RLE is far smaller
  dicom.write(tmp_path / "rle.dcm", stored, transfer_syntax=RLELossless)
  dicom.write(tmp_path / "raw.dcm", stored)
  assert (tmp_path / "rle.dcm").stat().st_size < (tmp_path / "raw.dcm").stat().st_size - 500
  np.testing.assert_array_equal(dicom.read(tmp_path / "rle.dcm")[0], 0.0)


def test_write_is_deterministic(tmp_path):
  stored = np.arange(256, dtype=np.uint8).reshape(16, 16)
  dicom.write(tmp_path / "a.dcm", stored, age="058Y", sex="F")
  dicom.write(tmp_path / "b.dcm", stored, age="058Y", sex="F")
  assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()
  assert not list(tmp_path.glob(".tmp-*"))


# ------------------------------------------------------------------ VOI / LUTs


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("function", [None, "LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_follows_the_dicom_formula(tmp_path, photometric, function):
  stored = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
  slope, intercept, c, w = 2.0, -1024.0, 1000.0, 2001.0
  path = tmp_path / "x.dcm"
  # A second window must be ignored: the first is the default view.
  dicom.write(path, stored, photometric=photometric, bits_stored=12, rescale_slope=slope,
              rescale_intercept=intercept, window_center=[c, 50.0], window_width=[w, 10.0])
  if function is not None:
    _edit(path, VOILUTFunction=function)
  image, _ = dicom.read(path)
  m = stored * slope + intercept
  formula = {None: _dicom_linear, "LINEAR": _dicom_linear,
             "LINEAR_EXACT": _dicom_linear_exact, "SIGMOID": _dicom_sigmoid}[function]
  expected = formula(m, c, w)
  # pydicom's apply_windowing maps to the rescaled storable range; bring it to [0, 1].
  lo, hi = intercept, 4095 * slope + intercept
  by_pydicom = (apply_windowing(m, pydicom.dcmread(path)) - lo) / (hi - lo)
  np.testing.assert_allclose(by_pydicom, expected, rtol=0, atol=1e-9)
  if photometric == "MONOCHROME1":
    expected = 1.0 - expected
  np.testing.assert_allclose(image, expected, rtol=0, atol=1e-6)
  assert 0.0 < expected.mean() < 1.0  # the window cuts inside the data


def test_width_one_linear_window_is_a_threshold(tmp_path):
  stored = np.arange(256, dtype=np.uint8).reshape(16, 16)
  dicom.write(tmp_path / "x.dcm", stored, window_center=100.5, window_width=1.0)
  image, _ = dicom.read(tmp_path / "x.dcm")
  np.testing.assert_array_equal(image, (stored > 100).astype(np.float32))


def _lut_item(first: int, data, bits: int) -> Dataset:
  item = Dataset()
  item.add_new("LUTDescriptor", "US", [len(data), first, bits])
  item.add_new("LUTData", "US", [int(x) for x in data])
  return item


def test_voi_lut_sequence_is_applied_before_a_window(tmp_path):
  stored = np.arange(256, dtype=np.uint8).reshape(16, 16)
  path = tmp_path / "x.dcm"
  dicom.write(path, stored, window_center=10.0, window_width=5.0)
  lut = np.random.default_rng(3).integers(0, 1024, size=64)
  _edit(path, VOILUTSequence=Sequence([_lut_item(100, lut, 10)]))
  image, _ = dicom.read(path)
  expected = lut[np.clip(stored.astype(int) - 100, 0, 63)] / 1023.0
  np.testing.assert_allclose(image, expected, rtol=0, atol=1e-6)


def test_modality_lut_sequence_and_its_full_range(tmp_path):
  stored = np.arange(256, dtype=np.uint8).reshape(16, 16)
  path = tmp_path / "x.dcm"
  dicom.write(path, stored)
  # Peaks inside: the range is not the ends'. Stored values >= 200 take the last entry.
  lut = 20000 - (np.arange(200) - 120) ** 2
  _edit(path, ModalityLUTSequence=Sequence([_lut_item(0, lut, 16)]))
  image, _ = dicom.read(path)
  m = lut[np.minimum(stored, 199)]
  np.testing.assert_allclose(image, (m - lut.min()) / (lut.max() - lut.min()), rtol=0,
                             atol=1e-6)


# ---------------------------------------------------------------------- header


@pytest.mark.parametrize("age,years", [
    ("058Y", 58.0), ("006M", 0.5), ("010W", 70 / 365.25), ("003D", 3 / 365.25),
    ("58", 58.0), (58, 58.0), ("", math.nan), ("old", math.nan), (None, math.nan)])
def test_header_fields(tmp_path, age, years):
  path = tmp_path / "x.dcm"
  dicom.write(path, np.zeros((4, 4), np.uint8), view_position="AP", sex="F", age=age,
              patient_id="patient-7")
  header = dicom.read_header(path)
  assert header["view_position"] == "AP" and header["sex"] == "F"
  assert header["patient_id"] == "patient-7"
  np.testing.assert_allclose(header["age"], years, rtol=1e-12, equal_nan=True)


def test_missing_header_fields_are_empty_or_nan(tmp_path):
  path = tmp_path / "x.dcm"
  dicom.write(path, np.zeros((4, 4), np.uint8))
  _edit(path, PatientSex=None, PatientID=None)
  header = dicom.read_header(path)
  assert (header["view_position"], header["sex"], header["patient_id"]) == ("", "", "")
  assert math.isnan(header["age"])


def test_read_header_equals_reads_header(tmp_path):
  path = tmp_path / "x.dcm"
  dicom.write(path, np.zeros(SHAPE, np.uint16), bits_stored=10, view_position="PA",
              sex="M", age="58", patient_id="p", transfer_syntax=RLELossless)
  _, header = dicom.read(path)
  assert header == dicom.read_header(path)
  assert header == dict(view_position="PA", sex="M", age=58.0, patient_id="p", rows=16,
                        columns=24, photometric="MONOCHROME2", bits_stored=10,
                        transfer_syntax="RLE Lossless")


# ------------------------------------------------------------------- bad files


def _raises_naming(path, *fragments: str, reader=dicom.read) -> str:
  with pytest.raises(DicomError) as info:
    reader(path)
  message = str(info.value)
  for fragment in (str(path), *fragments):
    assert fragment in message, message
  return message


@pytest.mark.parametrize("content", [b"", b"not a dicom file\n" * 50,
                                     np.random.default_rng(4).bytes(4096)])
def test_non_dicom_bytes(tmp_path, content):
  path = tmp_path / "junk.dcm"
  path.write_bytes(content)
  _raises_naming(path)
  _raises_naming(path, reader=dicom.read_header)


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, fraction):
  whole = _plain(tmp_path, shape=(32, 32)).read_bytes()
  path = tmp_path / "cut.dcm"
  path.write_bytes(whole[:int(len(whole) * fraction)])
  _raises_naming(path)


def test_corrupt_pixel_length(tmp_path):
  path = _plain(tmp_path)
  _edit(path, Rows=SHAPE[0] + 1)  # the pixel data no longer fills the image
  _raises_naming(path, "pixel data")


def test_no_pixel_data(tmp_path):
  path = _plain(tmp_path)
  _edit(path, PixelData=None)
  _raises_naming(path, "Pixel Data")
  assert dicom.read_header(path)["rows"] == SHAPE[0]  # a header scan still works


@pytest.mark.parametrize("photometric,samples", [
    ("RGB", 3), ("YBR_FULL", 3), ("YBR_FULL_422", 3), ("PALETTE COLOR", 1)])
def test_colour_is_refused(tmp_path, photometric, samples):
  path = tmp_path / "colour.dcm"
  dicom.write(path, np.zeros((8, 8), np.uint8))
  _edit(path, PhotometricInterpretation=photometric, SamplesPerPixel=samples,
        PixelData=bytes(8 * 8 * samples), **({"PlanarConfiguration": 0} if samples > 1 else {}))
  _raises_naming(path, photometric)


def test_multiframe_is_refused(tmp_path):
  path = tmp_path / "frames.dcm"
  dicom.write(path, np.zeros((8, 8), np.uint8))
  _edit(path, NumberOfFrames=3, PixelData=bytes(3 * 64))
  _raises_naming(path, "NumberOfFrames=3")


def test_bits_stored_above_bits_allocated(tmp_path):
  path = _plain(tmp_path)
  _edit(path, BitsStored=17)
  _raises_naming(path, "BitsStored=17")


def test_unknown_voi_lut_function(tmp_path):
  path = _plain(tmp_path, window_center=100.0, window_width=50.0)
  _edit(path, VOILUTFunction="CUBIC")
  _raises_naming(path, "CUBIC")


def _garbage_compressed(tmp_path, syntax):
  path = tmp_path / "compressed.dcm"
  dicom.write(path, np.zeros((8, 8), np.uint8))
  ds = pydicom.dcmread(path)
  ds.file_meta.TransferSyntaxUID = syntax
  ds.PixelData = encapsulate([b"\x00not a codestream\x00" * 4])
  ds["PixelData"].VR = "OB"
  ds.save_as(path)
  return path


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless])
def test_undecodable_compressed_file_names_file_and_syntax(tmp_path, syntax):
  # Whether a decoder is installed varies (Pillow decodes JPEG 2000); either
  # way the message must say which file and which syntax.
  path = _garbage_compressed(tmp_path, syntax)
  message = _raises_naming(path, syntax.name, str(syntax))
  if not get_decoder(syntax).is_available:
    assert dicom.CODECS_EXTRA in message
  assert dicom.read_header(path)["transfer_syntax"] == syntax.name


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless])
def test_missing_decoder_names_the_extra(tmp_path, monkeypatch, syntax):
  monkeypatch.setattr(get_decoder(syntax), "_available", {})  # as without codecs
  path = _garbage_compressed(tmp_path, syntax)
  _raises_naming(path, syntax.name, str(syntax), "pip install 'saliency-jax[dicom-codecs]'")


def test_missing_file_is_an_os_error(tmp_path):
  with pytest.raises(FileNotFoundError):
    dicom.read(tmp_path / "absent.dcm")


def test_write_refuses_values_that_do_not_fit(tmp_path):
  with pytest.raises(ValueError, match="do not fit"):
    dicom.write(tmp_path / "x.dcm", np.full((4, 4), 300), bits_allocated=8)
  with pytest.raises(ValueError, match="photometric"):
    dicom.write(tmp_path / "x.dcm", np.zeros((4, 4), np.uint8), photometric="RGB")


def test_explicit_little_endian_is_the_default(tmp_path):
  path = _plain(tmp_path)
  assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_jpeg_baseline_decodes_like_the_codestream(tmp_path):
  # RSNA Pneumonia's films are JPEG Baseline; Pillow (a dependency through
  # matplotlib) decodes them without the [dicom-codecs] extra.
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  stored = np.clip(rng.normal(128, 40, (32, 48)), 0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(stored).save(buffer, format="JPEG", quality=90)
  path = tmp_path / "jpeg.dcm"
  dicom.write(path, stored)
  ds = pydicom.dcmread(path)
  ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
  ds.PixelData = encapsulate([buffer.getvalue()])
  ds["PixelData"].VR = "OB"
  ds.save_as(path)
  image, header = dicom.read(path)
  expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue()))) / 255.0
  assert header["transfer_syntax"] == JPEGBaseline8Bit.name
  np.testing.assert_allclose(image, expected, atol=1.5 / 255)
  assert np.abs(image - stored / 255.0).mean() < 0.05  # lossy, but the same film
