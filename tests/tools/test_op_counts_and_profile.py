"""The launch-overhead tools: tools/analysis/count_ops.py counts what the GPU path launches (the
model reaches the two ops' kernels, one call per attention or scan, not the CPU reference's many small
ops), and profile_model.py's host table counts each op's calls and CPU time per step."""
from collections import Counter

import pytest
from conftest import load_tool

import ops


@pytest.fixture
def neighborhood_calls(monkeypatch):
    """How many times the model applies a neighborhood (counted at the Python level, independently
    of the dispatch-mode counter under test)."""
    calls = Counter()
    original = ops.Neighborhood.__call__

    def counted(self, value):
        calls['na2d'] += 1
        return original(self, value)

    monkeypatch.setattr(ops.Neighborhood, '__call__', counted)
    return calls


def test_counts_one_op_per_kernel_call(neighborhood_calls):
    import a2mamba_core
    tool = load_tool('analysis/count_ops.py')
    counts = tool.count_ops('a2mamba_n', image_size=32)
    assert tool.STAND_IN not in ops.backends('na2d') + ops.backends('selective_scan_states')
    scans = sum(isinstance(m, a2mamba_core.a2mamba.A2SSM) for m in a2mamba_core.create_model('a2mamba_n').modules())
    assert neighborhood_calls['na2d'] > 0 and scans > 0
    assert counts['a2mamba.na2d'] == neighborhood_calls['na2d']
    assert counts['a2mamba.selective_scan_states'] == scans
    # the reference's window gathers and scatters never run
    assert not {'aten.index_select.default', 'aten.scatter_add_.default'} & set(counts)


def test_profile_host_table_counts_the_ops_of_a_step():
    """tools/analysis/profile_model.py's host table: per-step calls and own CPU time of each op,
    from a CPU profile of a step that issues a known number of each op."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    tool = load_tool('analysis/profile_model.py')
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    steps = 3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            for _ in range(5):
                torch.mm(a, b)
            torch.add(a, b)
    table = tool.host_table(prof.key_averages(), steps, 10)
    rows = {line.split(' | ')[0].lstrip('| '): line.split(' | ') for line in table if line.startswith('| aten::')}
    assert int(rows['aten::mm'][1]) == 5 and int(rows['aten::add'][1]) == 1
    assert float(rows['aten::mm'][2]) > 0


def test_host_time_per_call_times_both_ops_and_cleans_up():
    tool = load_tool('analysis/count_ops.py')
    times = tool.host_time_per_call(iters=3)
    assert set(times) == {f'{op} {mode}' for op in ('na2d', 'selective_scan_states')
                          for mode in ('forward', 'forward + backward')}
    assert all(t > 0 for t in times.values())
    assert tool.STAND_IN not in ops.backends('na2d') + ops.backends('selective_scan_states')
