"""The Registry class: registration, lookup, suggestions, aliases, sources, listing, building."""

from __future__ import annotations

import functools

import pytest

from visionkit.errors import RegistryError
from visionkit.registry import Entry, Registry, source_of


def make() -> Registry:
    reg = Registry("THINGS", "(x) -> thing")

    @reg.register("hswish", aliases=("hard_swish",))
    def hswish(scale: float = 1.0) -> tuple[str, float]:
        return ("hswish", scale)

    reg.register(lambda **kw: ("swish", kw), name="swish")
    return reg


def test_get_and_alias_return_the_same_callable() -> None:
    reg = make()
    assert reg.get("hard_swish") is reg.get("hswish")
    assert "hard_swish" in reg and "hswish" in reg and "nope" not in reg


def test_unknown_name_suggests_closest_and_how_to_list() -> None:
    reg = make()
    with pytest.raises(RegistryError) as err:
        reg.get("hswsh")
    message = str(err.value)
    assert "unknown things 'hswsh'" in message
    assert "Did you mean 'hswish'" in message
    assert "python -m visionkit list things" in message


def test_unknown_name_without_close_match_has_no_suggestion() -> None:
    with pytest.raises(RegistryError) as err:
        make().get("zzzzzzzz")
    assert "Did you mean" not in str(err.value)


def test_duplicate_from_another_source_names_both() -> None:
    reg = Registry("THINGS")
    reg._add(Entry("relu", object(), "pkg-a"), override=False)
    with pytest.raises(RegistryError) as err:
        reg._add(Entry("relu", object(), "pkg-b"), override=False)
    assert "pkg-a" in str(err.value) and "pkg-b" in str(err.value)
    replacement = object()
    reg._add(Entry("relu", replacement, "pkg-b"), override=True)
    assert reg.get("relu") is replacement and reg.source("relu") == "pkg-b"


def test_alias_clash_with_another_source_is_an_error() -> None:
    reg = Registry("THINGS")
    reg._add(Entry("a", object(), "pkg-a", aliases=("x",)), override=False)
    with pytest.raises(RegistryError, match="'x' is already registered by 'pkg-a'"):
        reg._add(Entry("b", object(), "pkg-b", aliases=("x",)), override=False)


def test_same_source_may_register_again() -> None:
    reg = Registry("THINGS")
    first, second = object(), object()
    reg._add(Entry("a", first, "pkg"), override=False)
    reg._add(Entry("a", second, "pkg"), override=False)
    assert reg.get("a") is second and len(reg) == 1


def test_names_are_sorted_and_filtered_with_fnmatch() -> None:
    reg = make()
    assert reg.names() == ["hswish", "swish"]
    assert reg.names("h*") == ["hswish"]
    assert reg.names("*wish") == ["hswish", "swish"]
    assert reg.names("x*") == []


def test_source_is_the_distribution_or_the_module() -> None:
    assert source_of("visionkit.layers") == "visionkit"
    assert source_of("torch.nn") == "torch"
    assert source_of("not_installed_anywhere.mod") == "not_installed_anywhere.mod"
    assert make().source("hswish") == __name__  # a test module belongs to no distribution


def test_build_from_name_mapping_callable_and_partial() -> None:
    reg = make()
    assert reg.build("hswish") == ("hswish", 1.0)
    assert reg.build({"name": "hswish", "scale": 2.0}) == ("hswish", 2.0)
    assert reg.build({"name": "hswish", "scale": 2.0}, scale=3.0) == ("hswish", 3.0)
    assert reg.build(lambda: "direct") == "direct"
    part = functools.partial(reg.get("hswish"), scale=5.0)
    assert reg.build(part) == ("hswish", 5.0)


def test_build_from_dictconfig() -> None:
    from omegaconf import OmegaConf

    root = OmegaConf.create({"spec": {"name": "hswish", "scale": "${x}"}, "x": 4.0})
    assert make().build(root.spec) == ("hswish", 4.0)  # interpolations are resolved


def test_build_rejects_specs_without_a_name() -> None:
    with pytest.raises(RegistryError, match="needs a 'name' key"):
        make().build({"scale": 1.0})
    with pytest.raises(RegistryError, match="cannot build from 3"):
        make().build(3)


def test_contract_check_runs_on_build() -> None:
    def check(obj: object) -> None:
        if not isinstance(obj, int):
            raise RegistryError("THINGS: not an int")

    reg = Registry("THINGS", check=check)
    reg.register(lambda: 1, name="one")
    reg.register(lambda: "1", name="bad")
    assert reg.build("one") == 1
    with pytest.raises(RegistryError, match="not an int"):
        reg.build("bad")


def test_lazy_entries_import_on_first_use() -> None:
    reg = Registry("THINGS")
    reg.register("collections:OrderedDict", name="odict")
    entry = reg.entry("odict")
    assert isinstance(entry.target, str) and entry.source == "collections"
    from collections import OrderedDict

    assert reg.get("odict") is OrderedDict


def test_registry_error_message_is_not_quoted_like_keyerror() -> None:
    err = RegistryError("plain message")
    assert str(err) == "plain message"
    assert isinstance(err, KeyError)
