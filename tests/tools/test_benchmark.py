"""tools/analysis/benchmark.py: the model specs with training-memory variants, and their rows."""
import argparse

import pytest
import torch
from conftest import load_tool


@pytest.fixture(scope='module')
def tool():
    return load_tool('analysis/benchmark.py')


def test_model_specs_parse_variants(tool):
    assert tool.parse_model_spec('a2mamba_t') == tool.ModelSpec('a2mamba_t')
    spec = tool.parse_model_spec('a2mamba_t@checkpoint=2,0,0,0@memory_budget=0.5')
    assert (spec.checkpoint, spec.memory_budget, spec.is_variant) == ((2, 0, 0, 0), 0.5, True)
    assert spec.label == 'a2mamba_t@checkpoint=2,0,0,0@memory_budget=0.5'
    assert tool.parse_model_spec('a2mamba_n@checkpoint=1').checkpoint == 1
    assert not tool.ModelSpec('swin_tiny_patch4_window7_224').is_variant


@pytest.mark.parametrize('spec,message', [
    ('a2mamba_t@chekpoint=2', "unknown option 'chekpoint'"),
    ('a2mamba_t@checkpoint=two', 'bad value'),
    ('a2mamba_t@memory_budget=0', 'bad value'),
    ('a2mamba_t@memory_budget=1.5', 'bad value'),
    ('convnext_tiny@checkpoint=1', 'for A2Mamba models'),
])
def test_bad_model_specs_say_what_was_expected(tool, spec, message):
    with pytest.raises(ValueError, match=message):
        tool.parse_model_spec(spec)


def test_checkpoint_variant_builds_the_model_with_those_counts(tool):
    model = tool.build(tool.parse_model_spec('a2mamba_n@checkpoint=2,0,1,0'), 64)
    assert [stage.use_checkpoint for stage in model.stages] == [2, 0, 1, 0]
    assert [stage.use_checkpoint for stage in tool.build(tool.ModelSpec('a2mamba_n'), 64).stages] == [0] * 4


def test_memory_budget_is_set_while_the_variant_compiles(tool, monkeypatch):
    seen = []
    monkeypatch.setattr(tool, '_measure', lambda *a: seen.append(
        torch._functorch.config.activation_memory_budget) or {})
    args = argparse.Namespace()
    tool.measure(tool.parse_model_spec('a2mamba_n@memory_budget=0.25'), 'compile', args, torch.device('cpu'))
    tool.measure(tool.ModelSpec('a2mamba_n'), 'compile', args, torch.device('cpu'))
    assert seen == [0.25, 1.0]
    assert torch._functorch.config.activation_memory_budget == 1.0
    with pytest.raises(ValueError, match='compiled modes'):
        tool.measure(tool.parse_model_spec('a2mamba_n@memory_budget=0.25'), 'eager', args, torch.device('cpu'))


def test_variant_rows_time_training_only(tool, capsys):
    tool.main(['--models', 'a2mamba_n', 'a2mamba_n@checkpoint=2', '--train', '--image-size', '64',
               '--batch-size', '2', '--warmup', '1', '--iters', '1'])
    rows = {line.split('|')[1].strip(): [cell.strip() for cell in line.split('|')[2:-1]]
            for line in capsys.readouterr().out.splitlines() if line.startswith('| a2mamba_n')}
    base, variant = rows['a2mamba_n'], rows['a2mamba_n@checkpoint=2']
    assert base[0] == variant[0] == 'eager'
    assert float(base[1]) > 0 and float(base[2]) > 0
    assert variant[1] == '-' and float(variant[2]) > 0


def test_variants_need_training_and_budgets_a_compiled_mode(tool):
    with pytest.raises(SystemExit):
        tool.main(['--models', 'a2mamba_n@checkpoint=1'])
    with pytest.raises(SystemExit):
        tool.main(['--models', 'a2mamba_n@memory_budget=0.5', '--train'])


class _TinyClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.head = torch.nn.Linear(8, 1000)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def test_a_compiled_model_leaves_no_compiled_code_for_the_next(tool, monkeypatch):
    """Each model of a run compiles afresh: the compiled code of the one before (its CUDA-graph
    pools, counted in the next model's peak memory) is gone, and models sharing a forward do not
    pile up cache entries on it until Dynamo stops compiling."""
    monkeypatch.setattr(tool, 'build', lambda spec, image_size: _TinyClassifier())
    args = argparse.Namespace(channels_last=False, batch_size=2, image_size=16, amp='none', train=True,
                              warmup=1, iters=1, repeats=1)
    entries = torch._dynamo.eval_frame._debug_get_cache_entry_list
    result = tool.measure(tool.ModelSpec('tiny'), 'compile', args, torch.device('cpu'))
    assert result['infer_s'] > 0 and result['train_s'] > 0
    assert entries(_TinyClassifier.forward.__code__) == []
    # the check sees compiled code where it is kept
    compiled = torch.compile(_TinyClassifier(), backend='eager')
    compiled(torch.randn(1, 3, 16, 16))
    assert len(entries(_TinyClassifier.forward.__code__)) == 1
    torch._dynamo.reset()
