"""The registry's did-you-mean errors and the config validation every dataclass relies on."""

from dataclasses import dataclass

import pytest

from edgetune.config import check_choice, check_float, check_int, from_mapping, from_strings
from edgetune.errors import UsageError
from edgetune.registry import Registry


@dataclass
class Toy:
    r: int = 8
    alpha: float = 16.0
    act: str = "gelu"
    names: tuple[str, ...] = ()
    flag: bool = False

    def __post_init__(self):
        check_int(self, "r", lo=1, hi=64)
        check_float(self, "alpha", lo=0.0, lo_open=True)
        check_choice(self, "act", ["gelu", "relu"])


def test_registry_suggests_close_names():
    reg = Registry("method")
    reg.add("lora", 1)
    reg.add("ia3", 2)
    assert reg.get("lora") == 1
    with pytest.raises(UsageError,
                       match=r"unknown method 'lroa'; did you mean 'lora'\? \(choices: ia3, lora\)"):
        reg.get("lroa")
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("lora", 3)


@pytest.mark.parametrize("kwargs, message", [
    ({"r": 0}, r"Toy.r=0: must be an integer in \[1, 64\]"),
    ({"r": 2.5}, r"Toy.r=2.5: must be an integer"),
    ({"r": True}, r"Toy.r=True: must be an integer"),
    ({"alpha": -1.0}, r"Toy.alpha=-1.0: must be a finite number in \(0.0, inf\]"),
    ({"alpha": float("nan")}, r"Toy.alpha=nan"),
    ({"act": "swish"}, r"Toy.act='swish': must be one of gelu, relu"),
])
def test_config_errors_name_field_value_and_range(kwargs, message):
    with pytest.raises(UsageError, match=message):
        Toy(**kwargs)


def test_from_strings_parses_by_field_type():
    cfg = from_strings(Toy, ["r=4", "alpha=2", "names=query, value", "flag=true"])
    assert (cfg.r, cfg.alpha, cfg.names, cfg.flag) == (4, 2.0, ("query", "value"), True)
    assert isinstance(cfg.alpha, float)


@pytest.mark.parametrize("pairs, message", [
    (["acts=relu"], r"unknown Toy option 'acts'; did you mean 'act'\?"),
    (["r"], r"expected key=value"),
    (["r=four"], r"Toy.r='four': not a valid"),
    (["flag=maybe"], r"Toy.flag='maybe': not a valid"),
])
def test_from_strings_rejects_typos(pairs, message):
    with pytest.raises(UsageError, match=message):
        from_strings(Toy, pairs)


def test_from_mapping_rejects_unknown_keys():
    assert from_mapping(Toy, {"r": 2}).r == 2
    with pytest.raises(UsageError, match=r"unknown Toy option 'alpah'; did you mean 'alpha'\?"):
        from_mapping(Toy, {"alpah": 1.0})
