"""`make wordnet`'s WordNet step: the ways are tried in order and the first that works is used."""

import subprocess

import pytest

from emotion_lab.data import wordnet


@pytest.fixture
def ways(monkeypatch, tmp_path):
    """Every way to get WordNet replaced by a recorder; each test says which ways work."""
    calls = []
    monkeypatch.setenv(wordnet.NLTK_DATA_ENV, str(tmp_path / "nltk_data"))
    state = {"nltk": False, "apt": False, "download": False}

    def has_wordnet():
        calls.append("nltk")
        return state["nltk"]

    def apt_install(packages=wordnet.DEBIAN_PACKAGES):
        calls.append("apt")
        if state["apt"]:
            (tmp_path / "debian").mkdir(exist_ok=True)
        return state["apt"]

    def download(data_dir):
        calls.append("download")
        state["nltk"] = state["download"]
        return state["download"]

    monkeypatch.setattr(wordnet, "_nltk_has_wordnet", has_wordnet)
    monkeypatch.setattr(wordnet, "apt_install", apt_install)
    monkeypatch.setattr(wordnet, "nltk_download", download)
    monkeypatch.setattr(wordnet, "prepare_from_debian", lambda source, data_dir: calls.append("prepare"))
    return state, calls, tmp_path / "debian"


def test_an_nltk_wordnet_already_present_is_used_as_it_is(ways):
    state, calls, debian = ways
    state["nltk"] = True
    assert "already present" in wordnet.setup_wordnet(debian)
    assert calls == ["nltk"]


def test_installed_debian_packages_are_prepared_without_apt(ways):
    state, calls, debian = ways
    debian.mkdir()
    assert "Debian" in wordnet.setup_wordnet(debian)
    assert calls == ["nltk", "prepare"]


def test_apt_comes_before_the_downloader(ways):
    state, calls, debian = ways
    state["apt"] = state["download"] = True
    assert "Debian" in wordnet.setup_wordnet(debian)
    assert calls == ["nltk", "apt", "prepare"]


def test_the_downloader_is_the_last_way(ways):
    state, calls, debian = ways
    state["download"] = True
    assert "downloader" in wordnet.setup_wordnet(debian)
    assert calls == ["nltk", "apt", "download", "nltk"]


def test_with_no_way_one_message_names_each(ways):
    state, calls, debian = ways
    with pytest.raises(wordnet.WordNetMissingError) as err:
        wordnet.setup_wordnet(debian)
    message = str(err.value)
    for way in ("python -m nltk.downloader wordnet", "apt-get install wordnet-base wordnet-sense-index"):
        assert way in message
    assert calls == ["nltk", "apt", "download"]


def test_apt_is_not_tried_by_a_user_who_may_not(monkeypatch):
    monkeypatch.setattr(wordnet.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(wordnet.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(wordnet.subprocess, "run", lambda *a, **k: pytest.fail("ran apt-get without root or sudo"))
    assert wordnet.apt_install() is False


def test_apt_refreshes_the_package_lists_once_when_install_fails(monkeypatch):
    runs = []

    class Done:
        def __init__(self, code):
            self.returncode = code

    def run(cmd, **kwargs):
        runs.append(cmd[cmd.index("apt-get") + 1])
        return Done(0 if len(runs) > 1 else 100)  # the first install fails: stale or empty package lists

    monkeypatch.setattr(wordnet.os, "geteuid", lambda: 0)
    monkeypatch.setattr(wordnet.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(wordnet.subprocess, "run", run)
    assert wordnet.apt_install() is True
    assert runs == ["install", "update", "install"]


@pytest.mark.parametrize("password_asked", [True, False])
def test_sudo_is_used_only_where_it_asks_no_password(monkeypatch, password_asked):
    monkeypatch.setattr(wordnet.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(wordnet.shutil, "which", lambda name: f"/usr/bin/{name}")
    ran = []

    def run(command, **kwargs):
        ran.append(command)
        return subprocess.CompletedProcess(command, 1 if password_asked else 0)

    monkeypatch.setattr(wordnet.subprocess, "run", run)
    assert wordnet.apt_prefix() == (None if password_asked else ["sudo", "-n"])
    assert ran == [["sudo", "-n", "true"]]  # a probe, never apt-get itself
