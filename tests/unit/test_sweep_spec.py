"""The sweep's parts that need no backtest: parameters, ids, resume bookkeeping, ranking and heat map."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from errors import ConfigError
from strategies import daily_short_strangle, micro_strangle
from sweep import (
    RESULTS_FILE,
    SWEEP_COPY,
    Job,
    append_result,
    check_out_dir,
    read_results,
    record,
    run_combination,
)
from sweep_report import heatmap_cells, rank, write_outputs
from sweep_spec import build_config, load_sweep
from trade_execution import ExecutionParams

FACTORIES = [micro_strangle, daily_short_strangle]
BASE = """\
strategy = "micro_strangle"
seeds = [1, 2]
[period]
from = "2026-03-03T10:00"
days = 0.5
"""


def spec_of(tmp_path: Path, text: str, name: str = "s.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_sweep(path, FACTORIES)


def test_factory_keywords_and_config_fields_both_reach_the_strategy():
    config = build_config("micro_strangle", micro_strangle, {"call_delta": 0.3, "max_concurrent_trades": 2,
                                                             "execution_params.max_requote_rounds": 4})
    assert config.legs == micro_strangle(call_delta=0.3).legs
    assert config.max_concurrent_trades == 2
    assert config.execution_params == ExecutionParams.phased(fill_timeout_seconds=30.0, aggressive_buffer_pct=2.0,
                                                             max_requote_rounds=4)


def test_a_sub_config_the_factory_left_unset_starts_from_its_defaults():
    assert daily_short_strangle(limit_pricing="touch").execution_params is None
    config = build_config("daily_short_strangle", daily_short_strangle,
                          {"limit_pricing": "touch", "execution_params.fill_timeout_seconds": 10.0})
    assert config.execution_params == ExecutionParams(fill_timeout_seconds=10.0)


def test_a_refused_value_is_the_configs_own_error():
    with pytest.raises(ConfigError, match="max_concurrent_trades"):
        build_config("micro_strangle", micro_strangle, {"max_concurrent_trades": 0})


def test_dotted_names_as_toml_tables_or_quoted_keys_are_one_parameter(tmp_path):
    nested = spec_of(tmp_path, BASE + "[grid]\nexecution_params.fill_timeout_seconds = [10, 20]\n", "a.toml")
    quoted = spec_of(tmp_path, BASE + "[grid]\n\"execution_params.fill_timeout_seconds\" = [10, 20]\n", "b.toml")
    assert nested.parameters == quoted.parameters == ("execution_params.fill_timeout_seconds",)
    assert [c.id for c in nested.combinations] == [c.id for c in quoted.combinations]


def test_every_combination_and_seed_has_its_own_stable_id(tmp_path):
    spec = spec_of(tmp_path, BASE + "[grid]\ncall_delta = [0.2, 0.3]\nqty = [0.01, 0.02]\n")
    assert len(spec.combinations) == 8 and len({c.id for c in spec.combinations}) == 8
    assert [c.id for c in spec_of(tmp_path, spec.text, "again.toml").combinations] == [c.id for c in spec.combinations]
    other_period = spec_of(tmp_path, spec.text.replace("days = 0.5", "days = 1"), "longer.toml")
    assert not {c.id for c in other_period.combinations} & {c.id for c in spec.combinations}


def test_runs_lists_explicit_combinations_and_refuses_a_repeat(tmp_path):
    spec = spec_of(tmp_path, BASE + "[[runs]]\ncall_delta = 0.2\n[[runs]]\ncall_delta = 0.3\nqty = 0.02\n")
    assert [dict(c.params) for c in spec.combinations[::2]] == [{"call_delta": 0.2}, {"call_delta": 0.3, "qty": 0.02}]
    with pytest.raises(ConfigError, match="runs #1 and #2 are the same combination"):
        spec_of(tmp_path, BASE + "[[runs]]\ncall_delta = 0.2\n[[runs]]\ncall_delta = 0.2\n", "twice.toml")


def ok_row(combination, pnl: float | None, trades: int = 1) -> dict:
    return {"id": combination.id, "params": dict(combination.params), "seed": combination.seed, "status": "ok",
            "error": None, "summary": {"total": {"realized_pnl": pnl, "trades": trades}}}


def test_the_ranking_averages_the_seeds_and_puts_unrankable_sets_last(tmp_path):
    spec = spec_of(tmp_path, BASE + "[grid]\ncall_delta = [0.2, 0.3, 0.35]\n")
    c = {(x.params["call_delta"], x.seed): x for x in spec.combinations}
    rows = [ok_row(c[(0.2, 1)], 1.0), ok_row(c[(0.2, 2)], 3.0), ok_row(c[(0.3, 1)], 5.0),
            {**ok_row(c[(0.3, 2)], None), "status": "failed", "summary": None, "error": "boom"},
            {**ok_row(c[(0.35, 1)], None), "status": "failed", "summary": None, "error": "boom"}]
    ranked = rank(spec, rows)
    assert [(r.rank, r.params["call_delta"], r.figures["realized_pnl"], r.ok, r.failed) for r in ranked] == [
        (1, 0.3, 5.0, 1, 1), (2, 0.2, 2.0, 2, 0), (None, 0.35, None, 0, 1)]


def test_the_heat_map_takes_the_best_or_the_mean_over_the_other_parameters(tmp_path):
    text = BASE.replace("seeds = [1, 2]", "seed = 1") + "[grid]\ncall_delta = [0.2, 0.3]\nqty = [0.01, 0.02]\n" \
        "max_loss_pct = [50, 60]\n[heatmap]\nx = \"call_delta\"\ny = \"qty\"\n"
    best = spec_of(tmp_path, text, "best.toml")
    mean = spec_of(tmp_path, text + "aggregate = \"mean\"\n", "mean.toml")
    rows = [ok_row(c, float(c.params["max_loss_pct"])) for c in best.combinations]
    rows_mean = [ok_row(c, float(c.params["max_loss_pct"])) for c in mean.combinations]
    assert best.heatmap is not None and mean.heatmap is not None
    xs, ys, cells = heatmap_cells(best, best.heatmap, rows)
    assert xs == [0.2, 0.3] and ys == [0.01, 0.02] and set(cells.values()) == {60.0}
    assert set(heatmap_cells(mean, mean.heatmap, rows_mean)[2].values()) == {55.0}


def test_outputs_do_not_depend_on_the_order_results_arrived_in(tmp_path):
    spec = spec_of(tmp_path, BASE + "[grid]\ncall_delta = [0.2, 0.3]\nqty = [0.01, 0.02]\n"
                                    "[heatmap]\nx = \"call_delta\"\ny = \"qty\"\n")
    rows = [ok_row(c, round(0.5 * i - 1, 2), i) for i, c in enumerate(spec.combinations)]
    first, second = tmp_path / "first", tmp_path / "second"
    write_outputs(spec, first, rows)
    write_outputs(spec, second, list(reversed(rows)))
    for name in ("ranking.csv", "heatmap.svg", "sweep.html"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_a_cut_last_line_is_dropped_and_a_broken_earlier_line_is_refused(tmp_path):
    path = tmp_path / RESULTS_FILE
    append_result(path, {"id": "a", "status": "ok"})
    append_result(path, {"id": "b", "status": "ok"})
    with path.open("ab") as handle:
        handle.write(b'{"id": "c", "sta')
    assert [row["id"] for row in read_results(path)] == ["a", "b"]
    assert path.read_bytes().endswith(b'"b","status":"ok"}\n')
    path.write_bytes(b'{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ConfigError, match="line 2"):
        read_results(path)


def test_a_failing_combination_is_a_failed_result_not_an_exception(tmp_path):
    spec = spec_of(tmp_path, BASE + "[grid]\ncall_delta = [0.2]\n")
    combination = spec.combinations[0]
    job = Job(run_id=combination.id, strategy="micro_strangle", factory=micro_strangle,
              params={"max_concurrent_trades": 0}, seed=1, start=spec.period.start, end=spec.period.end, poll=10.0,
              scenario=None, scratch_root=str(tmp_path))
    result = run_combination(job)
    assert result["status"] == "failed" and "max_concurrent_trades" in result["error"]
    assert list(tmp_path.glob(f"{combination.id}-*")) == []   # its scratch directory is gone
    out = tmp_path / "out"
    row = record(out, combination, result)
    assert read_results(out / RESULTS_FILE) == [json.loads(json.dumps(row))]
    assert "max_concurrent_trades" in (out / "runs" / combination.id / "error.txt").read_text(encoding="utf-8")


def test_a_resume_may_change_the_presentation_but_not_what_runs(tmp_path):
    text = BASE + "[grid]\ncall_delta = [0.2, 0.3]\nqty = [0.01, 0.02]\n[heatmap]\nx = \"call_delta\"\ny = \"qty\"\n"
    out = tmp_path / "out"
    out.mkdir()
    (out / SWEEP_COPY).write_text(text, encoding="utf-8")
    presentation = 'rank_by = "trades"\n' + text.replace('x = "call_delta"\ny = "qty"', 'x = "qty"\ny = "call_delta"')
    check_out_dir(spec_of(tmp_path, presentation, "p.toml"), out)   # accepted: the same runs
    with pytest.raises(ConfigError, match=r"seeds was \[1,2\], now \[1,3\]"):
        check_out_dir(spec_of(tmp_path, text.replace("seeds = [1, 2]", "seeds = [1, 3]"), "q.toml"), out)
