"""The README's Python examples run exactly as written (BEHAVIOUR.md 1.5, issue 3 acceptance).

Each ```python block of README.md is executed; the only name provided from outside is
``market``, the market-data service a running context exposes as ``ctx.market_data``.

The leg-helper and strike/expiry-form tables are checked against ``option_selection`` (issue 10):
every helper listed exists with the signature shown, every form listed builds a ``LegSpec``,
and every helper, strike type, filter key, ranking and expiry form the module accepts is listed,
so the tables cannot drift from the code in either direction.
"""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import option_selection
from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from contracts import Side
from market_data import MarketData
from option_selection import LegSpec, OptionQuery, SelectedOption, find_option, strangle
from strategy import StrategyConfig

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_a_strategy_and_a_find_option_example():
    blocks = python_blocks()
    assert any("StrategyConfig(" in b for b in blocks)
    assert any("find_option(" in b for b in blocks)


@pytest.fixture
def market(sim):
    client = CoincallClient(ClientSettings(base_url=sim.base_url), Credentials(sim.api_key, sim.api_secret), sim.clock)
    yield MarketData(client, sim.clock)
    client.close()


def test_every_readme_python_block_runs_as_written(market, capsys):
    namespace: dict = {"market": market}
    for block in python_blocks():
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own documentation

    config = namespace["my_strategy"]()
    assert isinstance(config, StrategyConfig) and config.name == "my_strategy" and len(config.legs) == 2
    put = namespace["put"]
    assert isinstance(put, SelectedOption) and put.option_type == "P" and -0.30 <= put.delta <= -0.15
    assert put.symbol in capsys.readouterr().out
    leg = namespace["short_put"]
    assert isinstance(leg, LegSpec) and isinstance(leg.strike_criteria, OptionQuery)
    near, far = namespace["bull_put"]
    assert (near.option_type, near.side, far.option_type, far.side) == ("P", Side.SELL, "P", Side.BUY)
    assert near.strike_criteria == {"type": "delta", "value": -0.25} and near.expiry_criteria == {"dte": 7}
    assert far.strike_criteria == {"type": "offset", "from_leg": 0, "value": -2000.0}


# --------------------------------------------------------------------------- the reference tables
LEG_HELPERS = {"strangle", "straddle", "iron_condor", "butterfly", "vertical_spread"}


def readme_section(heading: str) -> str:
    """From ``heading`` to the next heading of the same or a higher level."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n") + 1
    level = len(heading) - len(heading.lstrip("#"))
    following = re.search(rf"^#{{1,{level}}} ", text[start + len(heading):], flags=re.M)
    return text[start:start + len(heading) + following.start()] if following else text[start:]


def table_rows(section: str) -> list[list[str]]:
    """The body rows of every markdown table in ``section``, split into cells."""
    rows = []
    for line in section.splitlines():
        if not line.startswith("|") or re.match(r"^\|[-| ]+\|$", line):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        rows.append(cells)
    return [row for row in rows if not row[0].startswith(("Helper", "Form"))]  # drop header rows


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def bullet(section: str, label: str) -> str:
    """The text of the bullet starting with ``* `label```, up to the next bullet or blank line."""
    match = re.search(rf"^\* `{re.escape(label)}`.*?(?=^\* |^$)", section, flags=re.M | re.S)
    assert match, f"no bullet for `{label}`"
    return match.group(0)


def helper_rows() -> list[ast.Call]:
    calls = []
    for row in table_rows(readme_section("### Leg helpers")):
        call = ast.parse(code_spans(row[0])[0], mode="eval").body
        assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name), row[0]
        calls.append(call)
    return calls


def test_every_leg_helper_is_listed_with_its_real_signature():
    calls = helper_rows()
    listed = {call.func.id for call in calls}
    templates = {name for name, fn in inspect.getmembers(option_selection, inspect.isfunction)
                 if fn.__module__ == "option_selection" and not name.startswith("_")
                 and fn.__annotations__.get("return") == "list[LegSpec]"}
    assert listed == templates | LEG_HELPERS
    for call in calls:
        helper = getattr(option_selection, call.func.id)
        parameters = inspect.signature(helper).parameters
        shown = [arg.id for arg in call.args] + [keyword.arg for keyword in call.keywords]
        assert shown == list(parameters), f"{call.func.id}: README shows {shown}, code has {list(parameters)}"
        for arg in call.args:
            assert parameters[arg.id].default is inspect.Parameter.empty, f"{call.func.id}({arg.id}) has a default"
        for keyword in call.keywords:
            assert ast.literal_eval(keyword.value) == parameters[keyword.arg].default, f"{call.func.id}({keyword.arg})"
        legs = helper(0.1)
        assert legs and all(isinstance(leg, LegSpec) for leg in legs)


def test_every_strike_form_is_listed_and_builds_a_leg():
    section = readme_section("### Strike and expiry forms")
    strike_table = section[:section.index("\nThe `find_option` pipeline")]
    kinds = set()
    for row in table_rows(strike_table):
        example = code_spans(row[1])[0]
        if example.startswith("{"):
            criteria = ast.literal_eval(example)
            leg = LegSpec("C", 1, 0.1, criteria)
        else:
            query = eval(example, {"find_option": find_option})  # noqa: S307 - our own documentation
            assert isinstance(query, OptionQuery), example
            leg = LegSpec(query.option_type, 1, 0.1, query)
        kinds.add(leg.strike_type)
    assert kinds == set(option_selection.STRIKE_TYPES) | {"query"}
    assert f'`"{option_selection.LEGACY_SPOTDISTANCE}"`' in section
    LegSpec("C", 1, 0.1, {"type": option_selection.LEGACY_SPOTDISTANCE, "value": 5})


def test_every_find_option_filter_key_and_ranking_is_listed():
    section = readme_section("### Strike and expiry forms")
    strike_keys = code_spans(bullet(section, "strike"))[1:]
    assert sorted(strike_keys) == sorted(option_selection.STRIKE_FILTER_KEYS)
    delta_keys = code_spans(bullet(section, "delta"))[1:]
    assert sorted(delta_keys) == sorted(option_selection.DELTA_FILTER_KEYS)
    rank_words = code_spans(bullet(section, "rank_by"))[1:]
    rankings = [word for word in rank_words if word not in option_selection.DELTA_FILTER_KEYS]
    assert sorted(rankings) == sorted(option_selection.RANKINGS)
    for ranking in rankings:
        find_option("C", delta={"min": 0.1, "max": 0.4, "target": 0.25}, rank_by=ranking)


def test_every_expiry_form_is_listed_and_accepted_everywhere():
    section = readme_section("### Strike and expiry forms")
    expiry_table = section[section.index("\nExpiries ("):]
    keys: set[str] = set()
    forms = []
    for row in table_rows(expiry_table):
        form = ast.literal_eval(code_spans(row[1])[0])
        keys.update(form)
        forms.append(form)
        for target in option_selection.EXPIRY_TARGETS if "target" in form else ():
            assert f'`"{target}"`' in row[2], f"expiry target {target!r} not described"
            forms.append({**form, "target": target})
    assert keys == set(option_selection.EXPIRY_KEYS)
    for form in forms:
        assert LegSpec("C", 1, 0.1, {"type": "closestStrike", "value": 0}, form).expiry_criteria == form
        assert find_option("C", expiry=form).expiry == form
        assert all(leg.expiry_criteria == form for leg in strangle(0.1, dte=form))
    assert strangle(0.1, dte=7)[0].expiry_criteria == {"dte": 7}  # the int shorthand of the helpers
