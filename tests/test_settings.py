"""One source per setting: each script's settings block, its command line and the README agree.

Every script keeps its settings as constants in a block at the top (from a line starting with
`# --- Settings` to the next `# ---` line). Each constant there has a flag `--name-in-lower-case`
whose default is that constant, every flag with a default is such a constant, and the README
section of the script names exactly the flags that `--help` shows.
"""

import argparse
import ast
import importlib
import re

import pytest
from conftest import ROOT

SCRIPTS = ("make_events", "Pix2Pix_data", "data_management", "Pix2Pix_training", "Pix2Pix_denoise", "Pix2Pix_export",
           "baselines", "demo")
README_SECTION = {"demo": "Quick start"}  # else: the section whose heading names `SCRIPT.py`
OTHER_TOOLS = ("tensorboard", "sbatch", "pip ")  # README lines running them name their flags, not ours


def settings_block(script):
    """{NAME: line} of the UPPER_CASE constants assigned in the script's settings block."""
    source = (ROOT / f"{script}.py").read_text()
    lines = source.splitlines()
    starts = [i for i, line in enumerate(lines, 1) if line.startswith("# --- Settings")]
    assert len(starts) == 1, f"{script}.py: expected one '# --- Settings' line, found {len(starts)}"
    end = next(i for i, line in enumerate(lines, 1) if i > starts[0] and line.startswith("# ---"))
    names = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and starts[0] < node.lineno < end:
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name) and target.id.isupper():
                    names[target.id] = node.lineno
    return names


def visible_actions(script):
    """The parser's flags that --help shows: {long option string: action}."""
    parser = importlib.import_module(script).build_parser()
    return {next(o for o in a.option_strings if o.startswith("--")): a for a in parser._actions
            if a.option_strings and a.help is not argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)}


def flag_of(name):
    return "--" + name.lower().replace("_", "-")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_setting_has_its_flag_with_that_default(script):
    module = importlib.import_module(script)
    actions = {opt: a for a in module.build_parser()._actions for opt in a.option_strings}
    block = settings_block(script)
    assert block, f"{script}.py: empty settings block"
    for name, line in block.items():
        flag = flag_of(name)
        assert flag in actions, f"{script}.py:{line}: {name} has no flag {flag}"
        assert actions[flag].help is not argparse.SUPPRESS, f"{script}.py: {flag} is hidden"
        default, value = actions[flag].default, getattr(module, name)
        assert default == value, f"{script}.py: {flag} defaults to {default!r}, the setting {name} is {value!r}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_with_a_default_is_a_setting(script):
    block = settings_block(script)
    for flag, action in visible_actions(script).items():
        if action.default in (None, False) or action.required:
            continue  # no default to keep in one place
        names = [n for n in block if flag_of(n) == flag]
        assert names, f"{script}.py: {flag} defaults to {action.default!r} but no setting {flag[2:].upper()} holds it"


def readme_section(script):
    """The README text under the heading of the script (to the next heading of the same level)."""
    text = (ROOT / "README.md").read_text()
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    key = README_SECTION.get(script, f"`{script}.py`")
    found = [s for s in sections if key in s.splitlines()[0]]
    assert len(found) == 1, f"README: expected one '## ' section naming {key}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_readme_names_exactly_the_flags_of_help(script):
    actions = visible_actions(script)
    every_spelling = {opt for a in actions.values() for opt in a.option_strings}
    others = OTHER_TOOLS + tuple(f"python {o}.py" for o in SCRIPTS if o != script)
    lines = [line for line in readme_section(script).splitlines() if not any(t in line for t in others)]
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", "\n".join(lines)))
    extra = sorted(named - every_spelling)
    assert not extra, f"README's {script} section names flags {script}.py does not have: {extra}"
    missing = [flag for flag, a in actions.items() if not set(a.option_strings) & named]
    assert not missing, f"README's {script} section does not mention {missing}"


README_WORDS = {"off": False, "on": True}  # how the README's tables write a boolean default
MACHINE_DEFAULTS = {"--workers": "CPUs"}  # defaults the README names by what they are taken from


@pytest.mark.parametrize("script", SCRIPTS)
def test_readme_flag_tables_give_the_parsers_defaults(script):
    """A README table row `| --flag | default | ... |` whose default is one plain value (a number, a word) gives the
    flag's default; rows naming a default by where it comes from ("preset's", two paths) are left out."""
    actions = visible_actions(script)
    rows = re.findall(r"^\| `(--[a-z0-9-]+)`[^|]*\| `?([\w.+-]+)`? \|", readme_section(script), flags=re.M)
    for flag, written in rows:
        if flag not in actions or MACHINE_DEFAULTS.get(flag) == written:
            continue
        default = actions[flag].default
        assert README_WORDS.get(written, written) in (default, str(default)), \
            f"README's {script} table: {flag} defaults to {written}, {script}.py to {default!r}"
