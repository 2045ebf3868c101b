"""docs/configuration.md lists every environment variable read, and only those."""

import ast
import re

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
CONFIGURATION = REPO_ROOT / "docs" / "configuration.md"
# Modules that read the environment besides settings.py.
ENV_MODULES = (
    "webhooks_project/settings.py",
    "webhooks_project/queues.py",
    "webhooks_project/metrics.py",
)
# settings.py's helpers: env_str("NAME", default) and friends.
ENV_HELPERS = {"env_str", "env_bool", "env_int", "env_float", "env_list"}
# Variables of the shell itself, not configuration.
SHELL_VARIABLES = {"BASH_SOURCE", "PATH", "PWD", "HOME"}


def python_env_names(path) -> set[str]:
    """Names read with env_*("NAME"), os.environ.get("NAME") or os.environ["NAME"]."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            helper = isinstance(func, ast.Name) and func.id in ENV_HELPERS
            environ_get = (
                isinstance(func, ast.Attribute)
                and func.attr in {"get", "getenv"}
                and ast.unparse(func.value) in {"os.environ", "os"}
            )
            argument = node.args[0]
            if (helper or environ_get) and isinstance(argument, ast.Constant):
                names.add(argument.value)
        elif (
            isinstance(node, ast.Subscript)
            and ast.unparse(node.value) == "os.environ"
            and isinstance(node.slice, ast.Constant)
        ):
            names.add(node.slice.value)
    return names


def shell_env_names(text: str) -> set[str]:
    """Names read as ${NAME...} (with or without a default) in scripts and compose."""
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text)) - SHELL_VARIABLES


def documented_names() -> set[str]:
    """Variables in the first column of docs/configuration.md's tables."""
    text = CONFIGURATION.read_text()
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)`", text, re.MULTILINE)) | set(
        re.findall(r"^\| `[A-Z0-9_]+`, `([A-Z][A-Z0-9_]*)`", text, re.MULTILINE)
    )


def read_names() -> set[str]:
    """Every variable the settings, the modules, the scripts and compose read."""
    names = set()
    for module in ENV_MODULES:
        names |= python_env_names(REPO_ROOT / module)
    texts = [path.read_text() for path in (REPO_ROOT / "scripts").glob("*.sh")]
    texts += [(REPO_ROOT / name).read_text() for name in ("docker-compose.yml",)]
    texts += [(REPO_ROOT / "Procfile").read_text()]
    return names.union(*(shell_env_names(text) for text in texts))


def test_python_env_names_finds_every_form(tmp_path):
    # given: the forms the modules use
    source = tmp_path / "module.py"
    source.write_text(
        'A = env_int("ONE", 1)\nB = os.environ.get("TWO", "")\n'
        'C = os.environ["THREE"]\nD = env_list("FOUR", "")\n'
        'os.environ.setdefault("NOT_READ", "x")\n'
    )
    # then
    assert python_env_names(source) == {"ONE", "TWO", "THREE", "FOUR"}


def test_configuration_lists_every_setting_read_from_the_environment():
    names = set()
    for module in ENV_MODULES:
        names |= python_env_names(REPO_ROOT / module)
    # The settings module is the one that must be found, and its helpers parsed.
    assert {"DATABASE_URL", "LOG_FORMAT", "WEBHOOK_DNS_SERVERS"} <= names
    missing = sorted(names - documented_names())
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_configuration_lists_no_variable_that_nothing_reads():
    # The first cells of the tables, against what the code and scripts read
    # (PROMETHEUS_MULTIPROC_DIR: prometheus-client reads it).
    stale = sorted(documented_names() - read_names() - {"PROMETHEUS_MULTIPROC_DIR"})
    assert not stale, f"docs/configuration.md lists what nothing reads: {stale}"


def test_webhook_settings_stay_few():
    own = {name for name in read_names() if name.startswith("WEBHOOK_")}
    # 33 with WEBHOOK_QUEUE_PREFIX (read by webhooks_project/queues.py) and
    # WEBHOOK_MAX_BATCH_BYTES, the contract's (API.md, batch publishing).
    assert len(own) <= 33, sorted(own)


def test_configuration_lists_every_variable_the_scripts_and_compose_read():
    texts = [path.read_text() for path in (REPO_ROOT / "scripts").glob("*.sh")]
    texts += [(REPO_ROOT / name).read_text() for name in ("docker-compose.yml",)]
    texts += [(REPO_ROOT / "Procfile").read_text()]
    names = set().union(*(shell_env_names(text) for text in texts))
    assert {"FLOWER_BASIC_AUTH", "GRAFANA_ADMIN_PASSWORD"} <= names
    missing = sorted(names - documented_names())
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_readme_links_the_security_document():
    assert "](SECURITY.md)" in README.read_text()
    assert (REPO_ROOT / "SECURITY.md").is_file()
