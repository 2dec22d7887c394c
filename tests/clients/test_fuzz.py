"""Fuzzing the two doors an outsider controls: bytes into the image loader, arrays into the request
builder. Only the documented errors come out (ImageError, ContractError, ValueError, the first two
being ValueErrors that say what is wrong) or a clean result; no warning reaches the caller."""

import io
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from clients.client import ClientBase, check_request, make_request
from clients.contract import ContractError, ModelContract, Resize
from clients.images import ImageError, load_image
from clients.pipeline import preprocess


def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)).convert(mode).save(buf, fmt)
    return buf.getvalue()


SEEDS = [_encoded("PNG"), _encoded("JPEG"), _encoded("BMP"), _encoded("TIFF"), _encoded("WEBP"), _encoded("GIF", "P"),
         _encoded("PNG", "P"), _encoded("PNG", "I;16")]
MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a"]


@st.composite
def image_bytes(draw) -> bytes:
    """Pure noise, a real magic number followed by noise, or a real small file with bytes
    flipped, cut or appended (the decoders' deep paths)."""
    kind = draw(st.sampled_from(["noise", "magic", "mutated"]))
    if kind == "noise":
        return draw(st.binary(max_size=2048))
    if kind == "magic":
        return draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(1, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=64))


def quietly(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    assert not caught, [str(w.message) for w in caught]
    return result


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_bytes())
def test_image_loader_only_raises_image_error(data):
    try:
        out = quietly(load_image, data, max_pixels=4096 * 4096, name="fuzz.bin")
    except ImageError as exc:
        assert str(exc).startswith("fuzz.bin: ")
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and min(out.shape[:2]) >= 1
    assert out.flags.c_contiguous


DTYPES = [np.uint8, np.int8, np.uint16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_]


@st.composite
def contracts(draw) -> ModelContract:
    if draw(st.booleans()):
        resize = Resize("letterbox", draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    else:
        resize = Resize("stride", stride=draw(st.sampled_from([1, 8, 14, 32])))
    max_size = draw(st.one_of(st.none(), st.tuples(st.integers(1, 96), st.integers(1, 96))))
    return ModelContract(name="fuzz", task="segmentation", resize=resize, num_classes=3,
                         input_dtype=draw(st.sampled_from(["uint8", "float32"])),
                         max_batch_size=draw(st.integers(0, 4)), max_size=max_size)


@st.composite
def arrays(draw) -> np.ndarray:
    shape = tuple(draw(st.lists(st.integers(0, 40), min_size=0, max_size=5)
                       .filter(lambda dims: int(np.prod(dims)) <= 60_000)))  # bounded memory
    dtype = draw(st.sampled_from(DTYPES))
    return np.zeros(shape, dtype) + np.asarray(draw(st.integers(0, 1)), dtype)


def client_for(contract: ModelContract, max_side) -> ClientBase:
    client = ClientBase("127.0.0.1:1", contract.name, max_side=max_side)  # nothing is connected
    client._contract = contract
    return client


@settings(max_examples=300, deadline=None)
@given(contracts(), arrays(), st.one_of(st.none(), st.integers(1, 200)))
def test_request_builder_only_raises_documented_errors(contract, image, max_side):
    """What DenseClient.predict does before sending: check, letterbox, bound, build."""
    client = client_for(contract, max_side)
    try:
        images, _ = quietly(client._checked, [image], ["fuzz"])
        batch, transforms = quietly(preprocess, images, contract, client.max_side)
        check_request(batch, contract)
        inputs, outputs = make_request(batch, contract)
    except ValueError as exc:  # ContractError and ImageError are ValueErrors too
        assert str(exc)
        return
    (t,) = transforms
    h, w = contract.input_hw(batch.shape)
    assert (h, w) == t.padded and h <= contract.size_limit[0] and w <= contract.size_limit[1]
    assert batch.dtype == np.dtype(contract.input_dtype)
    sent = inputs[0].shape()
    assert list(sent) == (list(batch.shape[1:]) if contract.max_batch_size == 0 else list(batch.shape))
    assert [o.name() for o in outputs] == list(contract.output_names)


@settings(max_examples=200, deadline=None)
@given(contracts(), arrays())
def test_raw_tensors_are_bounded_or_refused(contract, batch):
    """infer_tensors' door: any array is refused with a ValueError/ContractError, or is a tensor
    the model takes within its limits."""
    try:
        check_request(batch, contract)
    except ContractError as exc:
        assert "limit" in str(exc)
        return
    except ValueError as exc:
        assert contract.name in str(exc)
        return
    assert batch.dtype == np.dtype(contract.input_dtype) and batch.ndim == 4
    h, w = contract.input_hw(batch.shape)
    assert h <= contract.size_limit[0] and w <= contract.size_limit[1]
    assert batch.nbytes <= contract.max_request_bytes
    make_request(batch, contract)
