"""The config file as CONTRACT.md §2 describes it, and its errors: one line, the key, the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from artifactfs.config import (
    Config,
    ConfigError,
    Overrides,
    default_config_path,
    load_config,
    load_config_by_provider,
    parse_size,
)
from artifactfs.providers import SPECS

SECRET = "tok-SECRET-7f3a9c"
USER = "user-SECRET-b41d"
ENV = {"GUMLOOP_API_KEY": SECRET, "GUMLOOP_USER_ID": USER, "VM0_API_KEY": SECRET,
       "SIGMIC_API_KEY": SECRET, "PLANGREP_API_KEY": SECRET, "XDG_CACHE_HOME": "/xdg/cache"}

FULL = """
[mount]
listing_ttl = 45
negative_ttl = 2.5
allow_other = true

[cache]
dir = "~/cache-here"
max_size = "512MiB"

[providers.gumloop]
type = "gumloop"
base_url = "http://127.0.0.1:8080/api/v1/"
token_env = "GUMLOOP_API_KEY"
user_id_env = "GUMLOOP_USER_ID"
agents = ["abc123DEFghiJKL", "second", "abc123DEFghiJKL"]
listing_ttl = 30

[providers.gumloop-work]
type = "gumloop"
token_file = "work.token"
user_id = "inline-user"

[providers.vm0]
token_env = "VM0_API_KEY"

[providers.sigmic]
tasks = ["task_123"]

[providers.plangrep]
token_env = "PLANGREP_API_KEY"
jobs = ["job_01abc123"]
"""


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake home and the tmp dir as working directory, so messages read ``config.toml: ...``."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


def write(text: str, mode: int = 0o600, name: str = "config.toml") -> Path:
    path = Path(name)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def load(text: str, environ: dict[str, str] | None = None, overrides: Overrides = Overrides(),
         mode: int = 0o600) -> Config:
    return load_config(write(text, mode), overrides, ENV if environ is None else environ)


def error(text: str, environ: dict[str, str] | None = None, mode: int = 0o600, **overrides) -> str:
    """The message of the ConfigError ``text`` raises, checked to be one line without secrets."""
    with pytest.raises(ConfigError) as info:
        load(text, environ, Overrides(**overrides), mode)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert SECRET not in message and USER not in message
    assert message.endswith(")"), "the fix is given in parentheses"
    return message


def test_full_config_with_all_four_types_and_two_gumloop_instances(home: Path) -> None:
    write(SECRET + "\n", name="work.token")
    config = load(FULL)
    assert config.path == Path("config.toml")
    assert (config.listing_ttl, config.negative_ttl, config.allow_other) == (45.0, 2.5, True)
    assert config.cache_dir == home / "cache-here"
    assert config.cache_max_size == 512 * 1024 ** 2
    assert [p.name for p in config.providers] == ["gumloop", "gumloop-work", "vm0", "sigmic", "plangrep"]
    assert [p.type for p in config.providers] == ["gumloop", "gumloop", "vm0", "sigmic", "plangrep"]

    gumloop = config.provider("gumloop")
    assert gumloop.base_url == "http://127.0.0.1:8080/api/v1"
    assert (gumloop.token, gumloop.secrets["user_id"]) == (SECRET, USER)
    assert gumloop.ids == ("abc123DEFghiJKL", "second")
    assert gumloop.listing_ttl == 30.0

    work = config.provider("gumloop-work")
    assert (work.token, work.secrets["user_id"]) == (SECRET, "inline-user")
    assert work.base_url == SPECS["gumloop"].default_base_url
    assert work.listing_ttl == 45.0 and work.ids == ()

    assert config.provider("vm0").ids == ()
    assert config.provider("vm0").secrets == {}
    assert config.provider("sigmic").ids == ("task_123",)
    assert config.provider("sigmic").token == SECRET, "token_env defaults to <TYPE>_API_KEY"
    assert config.provider("plangrep").ids == ("job_01abc123",)
    assert config.provider("plangrep").base_url == "https://plangrep.com/api/open/v1"
    with pytest.raises(KeyError):
        config.provider("nope")


def test_defaults_for_an_empty_file(home: Path) -> None:
    config = load("")
    assert (config.listing_ttl, config.negative_ttl, config.allow_other) == (60.0, 5.0, False)
    assert config.cache_dir == Path("/xdg/cache/artifactfs")
    assert config.cache_max_size == 10 * 1024 ** 3
    assert config.providers == ()
    assert load("", environ={}).cache_dir == home / ".cache" / "artifactfs"


def test_default_path_honours_xdg_config_home(tmp_path: Path, home: Path) -> None:
    assert default_config_path({"XDG_CONFIG_HOME": str(tmp_path / "xdg")}) == \
        tmp_path / "xdg" / "artifactfs" / "config.toml"
    assert default_config_path({}) == home / ".config" / "artifactfs" / "config.toml"
    assert default_config_path({"XDG_CONFIG_HOME": "relative"}) == home / ".config" / "artifactfs" / "config.toml"

    (tmp_path / "xdg" / "artifactfs").mkdir(parents=True)
    file = tmp_path / "xdg" / "artifactfs" / "config.toml"
    file.write_text("[providers.vm0]\n")
    config = load_config(None, environ={**ENV, "XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert config.path == file and config.provider("vm0").token == SECRET


def test_missing_default_file_gives_defaults_unless_required(tmp_path: Path) -> None:
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "nothing")}
    config = load_config(None, environ=environ)
    assert config.path is None and config.providers == ()
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(None, environ=environ, require_file=True)


def test_explicit_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Path("absent.toml"), environ={})
    assert str(info.value) == "absent.toml: no such config file (create it, see README 'Config')"


def test_missing_file_under_home_is_shown_with_a_tilde(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"^~/absent\.toml: no such config file"):
        load_config(home / "absent.toml", environ={})


def test_toml_syntax_error_names_line_and_column() -> None:
    message = error("[mount]\nlisting_ttl 60\n")
    assert message.startswith("config.toml: invalid TOML:") and "line 2" in message and "column" in message


ERRORS = [
    # (config text, environ or None for ENV, the dotted key, a piece of the problem, a piece of the fix)
    ("[mounts]\n", None, "mounts", "unknown table", "allowed: mount, cache, providers"),
    ("listing_ttl = 5\n", None, "listing_ttl", "unknown key", "allowed: mount, cache, providers"),
    ("[mount]\nlisting_tll = 5\n", None, "mount.listing_tll", "unknown key",
     "allowed: listing_ttl, negative_ttl, allow_other"),
    ("[cache]\nsize = 5\n", None, "cache.size", "unknown key", "allowed: dir, max_size"),
    ("mount = 5\n", None, "mount", "must be a table", "[mount]"),
    ("[mount]\nlisting_ttl = -1\n", None, "mount.listing_ttl", "number of seconds >= 0", "listing_ttl = 60"),
    ('[mount]\nlisting_ttl = "60"\n', None, "mount.listing_ttl", "number of seconds", "listing_ttl = 60"),
    ("[mount]\nnegative_ttl = true\n", None, "mount.negative_ttl", "number of seconds", "negative_ttl = 60"),
    ("[mount]\nlisting_ttl = nan\n", None, "mount.listing_ttl", "number of seconds", "listing_ttl = 60"),
    ('[mount]\nallow_other = "yes"\n', None, "mount.allow_other", "true or false", "allow_other = false"),
    ('[cache]\nmax_size = "lots"\n', None, "cache.max_size", "a size", '"10GiB"'),
    ("[cache]\nmax_size = true\n", None, "cache.max_size", "a size", '"10GiB"'),
    ("[cache]\ndir = 5\n", None, "cache.dir", "non-empty string", 'dir = "..."'),
    ("providers = 5\n", None, "providers", "must be a table", "[providers]"),
    ("[providers]\ngumloop = 1\n", None, "providers.gumloop", "must be a table", "[providers.gumloop]"),
    ('[providers.gumloop]\nagents = "abc"\n', None, "providers.gumloop.agents", "list of ids", '["id1", "id2"]'),
    ('[providers.gumloop]\nagents = ["ok", ""]\n', None, "providers.gumloop.agents", "list of ids", "agents = ["),
    ('[providers.sigmic]\ntasks = ["a/b"]\n', None, "providers.sigmic.tasks", "list of ids", "tasks = ["),
    ('[providers.plangrep]\njobs = [1]\n', None, "providers.plangrep.jobs", "list of ids", "jobs = ["),
    ("[providers.vm0]\nlisting_ttl = -5\n", None, "providers.vm0.listing_ttl", "seconds", "listing_ttl = 60"),
    ('[providers.vm0]\ntokenenv = "X"\n', None, "providers.vm0.tokenenv", "unknown key", "token_env"),
    ('[providers.work]\ntype = "dropbox"\n', None, "providers.work.type", "must be one of gumloop, plangrep, sigmic, vm0",
     'type = "gumloop"'),
    ("[providers.work]\n", None, "providers.work", "has no type", 'add type = "..."'),
    ('[providers.vm0]\nagents = ["a"]\n', None, "providers.vm0.agents", "only for gumloop providers",
     "remove agents"),
    ('[providers.gumloop]\ntasks = ["a"]\n', None, "providers.gumloop.tasks", "only for sigmic providers",
     "remove tasks"),
    ('[providers.sigmic]\njobs = ["a"]\n', None, "providers.sigmic.jobs", "only for plangrep providers",
     "remove jobs"),
    ('[providers.sigmic]\nuser_id_env = "U"\n', None, "providers.sigmic.user_id_env", "only for gumloop",
     "remove user_id_env"),
    ('[providers.".."]\ntype = "vm0"\n', None, 'providers.".."', "not usable as a directory name", "rename"),
    ('[providers."."]\ntype = "vm0"\n', None, 'providers."."', "directory name", "rename"),
    ('[providers.""]\ntype = "vm0"\n', None, 'providers.""', "directory name", "rename"),
    ('[providers."a/b"]\ntype = "vm0"\n', None, 'providers."a/b"', "directory name", "rename"),
    ('[providers."a\\u0000b"]\ntype = "vm0"\n', None, 'providers."a\\u0000b"', "directory name", "rename"),
    ('[providers.vm0]\nbase_url = "ftp://h"\n', None, "providers.vm0.base_url", "http:// or https://",
     "http(s)://host[:port][/path]"),
    ('[providers.vm0]\nbase_url = "api.vm0.ai"\n', None, "providers.vm0.base_url", "http:// or https://",
     "http(s)://host"),
    ('[providers.vm0]\nbase_url = "https://"\n', None, "providers.vm0.base_url", "no host", "http(s)://host"),
    ('[providers.vm0]\nbase_url = "https://h?x=1"\n', None, "providers.vm0.base_url", "query or fragment",
     "http(s)://host"),
    ('[providers.vm0]\nbase_url = "https://h/p#f"\n', None, "providers.vm0.base_url", "query or fragment",
     "http(s)://host"),
    ('[providers.vm0]\nbase_url = "https://h:99999"\n', None, "providers.vm0.base_url", "invalid port",
     "http(s)://host"),
    (f'[providers.vm0]\nbase_url = "https://me:{SECRET}@h"\n', None, "providers.vm0.base_url",
     "user name or password", "http(s)://host"),
    ('[providers.vm0]\ntoken_env = "A"\ntoken_file = "f"\n', None, "providers.vm0",
     "token_env and token_file are both set", "keep only one of token_env, token_file, token"),
    ('[providers.vm0]\ntoken_env = ""\n', None, "providers.vm0.token_env", "non-empty string", "token_env = "),
    ("[providers.gumloop]\n", {}, "providers.gumloop",
     "token_env GUMLOOP_API_KEY is not set", "export it or use token_file"),
    ('[providers.vm0]\ntoken_env = "MY_VAR"\n', {"MY_VAR": "  "}, "providers.vm0",
     "token_env MY_VAR is not set", "export it or use token_file"),
    ('[providers.gumloop]\nuser_id_env = "MY_USER"\n', {"GUMLOOP_API_KEY": SECRET}, "providers.gumloop",
     "user_id_env MY_USER is not set", "export it or use user_id_file"),
    ('[providers.gumloop]\nteam_id = 5\n', {"GUMLOOP_API_KEY": SECRET}, "providers.gumloop.team_id",
     "must be a non-empty string", "team_id = "),
    ('[providers.vm0]\nteam_id = "t"\n', None, "providers.vm0.team_id", "only for gumloop", "remove team_id"),
    ('[providers.vm0]\ntoken_file = "~nosuchuser-x/t"\n', None, "providers.vm0", "cannot expand",
     "write the path out"),
    ('[cache]\ndir = "~nosuchuser-x/c"\n[providers.vm0]\n', None, "cache.dir", "cannot expand", "write the path out"),
    ('[providers.vm0]\ntoken_file = "nope.token"\n', None, "providers.vm0", "token_file nope.token does not exist",
     "create it with mode 600, or use token_env"),
    ('[providers.vm0]\ntoken_file = "."\n', None, "providers.vm0", "token_file . cannot be read",
     "check its permissions"),
    ("[providers.vm0]\n", {"VM0_API_KEY": SECRET + "\x01"}, "providers.vm0",
     "token_env VM0_API_KEY holds control or non-ASCII characters", "check the token"),
]


@pytest.mark.parametrize("text,environ,key,problem,fix", ERRORS, ids=[e[2] + ":" + e[3] for e in ERRORS])
def test_each_error_is_one_line_naming_the_key_and_the_fix(text: str, environ: dict[str, str] | None, key: str,
                                                           problem: str, fix: str) -> None:
    message = error(text, environ)
    assert message.startswith(f"config.toml: {key}: "), message
    assert problem in message, message
    assert fix in message.split(" (", 1)[1], message


def test_empty_token_file_is_rejected() -> None:
    write("  \n", name="empty.token")
    message = error('[providers.vm0]\ntoken_file = "empty.token"\n')
    assert message == "config.toml: providers.vm0: token_file empty.token is empty " \
                      "(write the value into it, or use token_env)"


def test_token_file_readable_by_others_is_rejected_and_private_one_accepted(home: Path) -> None:
    token = home / "x.token"
    token.write_text(f"  {SECRET}\n")
    text = '[providers.vm0]\ntoken_file = "~/x.token"\n'
    for mode in (0o644, 0o640, 0o604):
        os.chmod(token, mode)
        assert error(text) == ("config.toml: providers.vm0: token_file ~/x.token is readable by group/others "
                               "(chmod 600 ~/x.token)")
    os.chmod(token, 0o600)
    assert load(text).provider("vm0").token == SECRET


def test_token_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    write(SECRET, name="conf/vm0.token")
    path = write('[providers.vm0]\ntoken_file = "vm0.token"\n', name="conf/config.toml")
    assert load_config(path, environ={}).provider("vm0").token == SECRET


def test_inline_token_needs_a_private_config_file() -> None:
    text = f'[providers.vm0]\ntoken = "{SECRET}"\n'
    message = error(text, mode=0o644)
    assert message == ("config.toml: providers.vm0.token: an inline token needs a private file, config.toml is "
                       "readable by group/others (chmod 600 config.toml, or use token_env)")
    assert load(text, environ={}, mode=0o600).provider("vm0").token == SECRET


def test_inline_user_id_is_accepted_in_a_readable_file() -> None:
    config = load('[providers.gumloop]\nuser_id = "u1"\n', mode=0o644)
    assert config.provider("gumloop").secrets["user_id"] == "u1"


def test_gumloop_user_id_is_optional_and_team_id_is_kept() -> None:
    """OAuth tokens need no user id; team keys name their team."""
    config = load_config(write('[providers.gumloop]\nteam_id = "team_9"\n'), environ={"GUMLOOP_API_KEY": SECRET})
    gumloop = config.provider("gumloop")
    assert gumloop.secrets == {"user_id": None} and gumloop.options == {"team_id": "team_9"}


def test_xattrs_switch_in_the_file_and_as_a_flag() -> None:
    assert load("[providers.vm0]\n").xattrs is True
    assert load("[mount]\nxattrs = false\n[providers.vm0]\n").xattrs is False
    path = write("[providers.vm0]\n")
    assert load_config(path, Overrides(xattrs=False), environ=ENV).xattrs is False


def test_flags_override_the_file(tmp_path: Path) -> None:
    text = '[mount]\nlisting_ttl = 45\n[cache]\nmax_size = "1G"\ndir = "/from/file"\n' \
           "[providers.vm0]\nlisting_ttl = 30\n[providers.sigmic]\n"
    config = load(text)
    assert (config.listing_ttl, config.provider("vm0").listing_ttl, config.provider("sigmic").listing_ttl) == \
        (45.0, 30.0, 45.0), "a provider's listing_ttl wins over [mount]"
    assert config.allow_other is False

    config = load(text, overrides=Overrides(listing_ttl=7, allow_other=True, cache_dir=Path("rel"),
                                            cache_max_size="100M"))
    assert (config.listing_ttl, config.provider("vm0").listing_ttl, config.provider("sigmic").listing_ttl) == \
        (7.0, 7.0, 7.0), "the flag wins over both"
    assert config.allow_other is True
    assert config.cache_dir == tmp_path / "rel"
    assert config.cache_max_size == 100 * 1024 ** 2
    assert load("[mount]\nallow_other = true\n", overrides=Overrides(allow_other=False)).allow_other is False


def test_bad_cache_size_flag() -> None:
    with pytest.raises(ConfigError) as info:
        load("", overrides=Overrides(cache_max_size="huge"))
    assert str(info.value) == "--cache-size: 'huge' is not a size (use e.g. 10GiB, 512MiB or a number of bytes)"


@pytest.mark.parametrize("text,size", [
    ("10GiB", 10 * 1024 ** 3), ("512MiB", 512 * 1024 ** 2), ("1.5G", 1536 * 1024 ** 2), ("100M", 100 * 1024 ** 2),
    ("4096", 4096), (4096, 4096), (0, 0), ("64k", 65536), ("2KB", 2048), ("1 TiB", 1024 ** 4), ("10gb", 10 * 1024 ** 3),
    ("7B", 7), (" 3M ", 3 * 1024 ** 2), (".5K", 512),
])
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("junk", ["", "lots", "10 GiBs", "-1", -1, "1.2.3", "10P", "G", True, 1.5, None, "1e3"])
def test_parse_size_rejects_junk(junk: object) -> None:
    with pytest.raises(ValueError):
        parse_size(junk)  # type: ignore[arg-type]


def test_tokens_never_appear_in_repr_or_str(home: Path) -> None:
    write(SECRET, name="work.token")
    config = load(FULL)
    for text in (repr(config), str(config), *map(repr, config.providers)):
        assert SECRET not in text and USER not in text and "inline-user" not in text
    assert "gumloop-work" in repr(config)


@pytest.mark.parametrize("text,environ", [
    (f'[providers.vm0]\ntoken = "{SECRET}"\n[providers.bad]\n', None),
    (f'[providers.vm0]\ntoken = "{SECRET}"\ntoken_env = "X"\n', None),
    (f'[providers.vm0]\ntoken = "{SECRET}"\nbogus = 1\n', None),
    (f'[providers.vm0]\ntoken = "{SECRET}\\u0007"\n', None),
    (f'[providers.gumloop]\ntoken = "{SECRET}"\nuser_id = "{USER}\\n"\nuser_id_env = "U"\n', None),
])
def test_tokens_never_appear_in_errors(text: str, environ: dict[str, str] | None) -> None:
    error(text, environ, mode=0o644)
    error(text, environ, mode=0o600)


def test_by_provider_keeps_the_others_when_one_provider_fails() -> None:
    """``doctor`` reports a provider's missing token on that provider's line, in file order."""
    environ = {k: v for k, v in ENV.items() if k != "VM0_API_KEY"}
    config, outcomes = load_config_by_provider(write(FULL.replace('token_file = "work.token"', 'token = "x"')),
                                               environ)
    assert list(outcomes) == ["gumloop", "gumloop-work", "vm0", "sigmic", "plangrep"]
    assert "VM0_API_KEY is not set" in str(outcomes["vm0"])
    assert [p.name for p in config.providers] == ["gumloop", "gumloop-work", "sigmic", "plangrep"]
    assert outcomes["sigmic"] == config.provider("sigmic")
    with pytest.raises(ConfigError, match="mount.listing_tll"):
        load_config_by_provider(write("[mount]\nlisting_tll = 1\n[providers.vm0]\n"), ENV)
    with pytest.raises(ConfigError, match="providers"):
        load_config_by_provider(write("providers = 5\n"), ENV)
