"""The Registry class: registration, lookup, suggestions, aliases, sources, listing, building."""

from __future__ import annotations

import functools

import pytest

from visionkit.errors import RegistryError
from visionkit.registries.registry import Entry, Registry, recording, source_of


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


def supplied_by(source: str, name: str = "relu"):
    """A builder that looks as if package ``source`` defined it (its module is the source)."""

    def build(**kw):
        return (source, kw)

    build.__module__ = source
    build.__name__ = name
    return build


@pytest.mark.parametrize("order", [("pkg_a", "pkg_b"), ("pkg_b", "pkg_a")])
def test_clash_keeps_both_suppliers_and_names_them_whatever_the_order(order) -> None:
    reg = Registry("THINGS")
    for source in order:
        reg.register(supplied_by(source))
    assert "relu" in reg and reg.names() == ["relu"] and len(reg) == 1
    assert [e.source for e in reg.suppliers("relu")] == ["pkg_a", "pkg_b"]
    with pytest.raises(RegistryError) as err:
        reg.get("relu")
    assert str(err.value) == (
        "things 'relu' is supplied by 2 packages: pkg_a and pkg_b; choose one with a qualified "
        "name wherever the name is given (e.g. 'pkg_a:relu') or with +plugins.prefer.relu=<package>"
    )


def test_qualified_name_picks_the_supplier_in_get_build_and_specs() -> None:
    reg = Registry("THINGS")
    reg.register(supplied_by("pkg_a"))
    reg.register(supplied_by("pkg_b"))
    assert reg.build("pkg_b:relu") == ("pkg_b", {})
    assert reg.build({"name": "pkg_a:relu", "x": 1}) == ("pkg_a", {"x": 1})
    assert reg.get("PKG-B:relu") is reg.get("pkg_b:relu")  # names compare as pip compares them
    assert "pkg_a:relu" in reg and "pkg_c:relu" not in reg
    with pytest.raises(
        RegistryError, match="'relu' is not supplied by 'pkg_c' but by pkg_a, pkg_b"
    ):
        reg.get("pkg_c:relu")


def test_prefer_resolves_the_bare_name() -> None:
    reg = Registry("THINGS")
    reg.register(supplied_by("pkg_a"))
    reg.register(supplied_by("pkg_b"))
    assert reg.prefer("relu", "pkg-b")
    assert reg.build("relu") == ("pkg_b", {})
    assert reg.build("pkg_a:relu") == ("pkg_a", {})  # a qualified name still wins
    assert not reg.prefer("relu", "pkg_c") and not reg.prefer("gelu", "pkg_a")


@pytest.mark.parametrize("plugin_first", [False, True])
def test_override_of_a_builtin_wins_the_bare_name(plugin_first: bool) -> None:
    reg = Registry("THINGS")
    builtin, plugin = supplied_by("visionkit"), supplied_by("pkg_a")
    calls = [lambda: reg.register(builtin), lambda: reg.register(plugin, override=True)]
    for call in reversed(calls) if plugin_first else calls:
        call()
    assert reg.get("relu") is plugin and reg.source("relu") == "pkg_a"
    assert reg.get("visionkit:relu") is builtin
    reg.register(supplied_by("pkg_b"), override=True)  # two overrides: a clash again
    with pytest.raises(RegistryError, match="supplied by 2 packages: pkg_a and pkg_b"):
        reg.get("relu")


def test_alias_clash_with_another_source_names_both() -> None:
    reg = Registry("THINGS")
    reg._add(Entry("a", object(), "pkg-a", aliases=("x",)), override=False)
    reg._add(Entry("b", object(), "pkg-b", aliases=("x",)), override=False)
    assert reg.names() == ["a", "b"] and reg.get("a") is not reg.get("b")
    with pytest.raises(RegistryError, match="'x' is supplied by 2 packages: pkg-a and pkg-b"):
        reg.get("x")
    assert reg.get("pkg-b:x") is reg.get("b")


def test_recording_rolls_back_additions_and_restores_what_they_replaced() -> None:
    reg = Registry("THINGS")
    kept, first = object(), object()
    reg._add(Entry("kept", kept, "other"), override=False)
    reg._add(Entry("a", first, "pkg"), override=False)
    with recording() as rec:
        reg._add(Entry("a", object(), "pkg", aliases=("alias",)), override=False)
        reg._add(Entry("new", object(), "pkg"), override=False)
    assert reg.names() == ["a", "kept", "new"] and "alias" in reg
    rec.rollback()
    assert reg.names() == ["a", "kept"] and "alias" not in reg
    assert reg.get("a") is first and reg.get("kept") is kept
    reg._add(Entry("later", object(), "pkg"), override=False)  # no longer recorded
    assert rec.added == []


def test_names_may_not_contain_a_colon() -> None:
    with pytest.raises(RegistryError, match="may not contain ':'"):
        Registry("THINGS").register(lambda: 1, name="pkg:one")


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


def test_source_of_names_the_supplier_the_standard_library_names() -> None:
    """The fast lookup agrees with ``importlib.metadata.packages_distributions`` (the oracle) for
    the packages parts come from and ones whose import name differs from their distribution's."""
    from importlib.metadata import packages_distributions

    from visionkit.registries.registry import _first_supplier

    expected = packages_distributions()
    tops = ["visionkit", "visionkit_example", "torch", "torchvision", "pytorch_lightning", "timm"]
    tops += ["PIL", "yaml", "google", "_distutils_hack", "hydra_plugins"]  # renamed / shared names
    tops = [t for t in tops if t in expected]
    assert len(tops) >= 8
    assert {t: _first_supplier(t) for t in tops} == {t: expected[t][0] for t in tops}
