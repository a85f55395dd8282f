"""A model cast to another dtype runs forward and backward with inputs of its dtype: the authors'
float32 islands compute in float32 (float64 for a float64 model) and hand back the model's dtype."""
import pytest
import torch
from conftest import rel_err

import a2mamba_core

# Tolerance against float32 (for float64: float32's own rounding). For 16 bits it bounds the stage-1
# map; the logits of a randomly initialised network are compared with bf16/fp16 autocast of the
# float32 model instead (what AMP users run), since 16-bit rounding over 14 blocks alone costs
# 10-15 % there.
CASES = [('cpu', torch.bfloat16, 3e-2), ('cpu', torch.float64, 1e-4),
         pytest.param('cuda', torch.float16, 5e-3, marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                            reason='needs a CUDA GPU'))]



@pytest.mark.parametrize('device,dtype,tolerance', CASES)
def test_cast_model_runs_and_matches_float32(device, dtype, tolerance):
    torch.manual_seed(0)
    reference = a2mamba_core.create_model('a2mamba_n', num_classes=10).to(device).eval()
    model = a2mamba_core.create_model('a2mamba_n', num_classes=10).to(device).eval()
    model.load_state_dict(reference.state_dict())
    model.to(dtype)
    x = torch.randn(2, 3, 64, 64, device=device)
    x_cast = x.to(dtype).requires_grad_()
    out = model(x_cast)
    assert out.dtype == dtype
    out.float().square().sum().backward()
    assert x_cast.grad is not None and x_cast.grad.dtype == dtype and torch.isfinite(x_cast.grad).all()
    assert all(p.grad is None or (p.grad.dtype == dtype and torch.isfinite(p.grad).all()) for p in model.parameters())
    with torch.no_grad():
        expected = reference(x)
        assert rel_err(model.forward_features(x.to(dtype))[0], reference.forward_features(x)[0]) < tolerance
        if dtype == torch.float64:
            assert rel_err(out, expected) < tolerance
        else:
            with torch.autocast(device, dtype=dtype):
                autocast_error = rel_err(reference(x), expected)
            assert rel_err(out, expected) < 1.5 * autocast_error + 1e-3
