"""The box's Debian mirror comes from the host's apt configuration (never from the repo)."""

from __future__ import annotations

import pytest

from tests.box.mirror import RELEASE_VARIABLE, MirrorNotFound, UnknownRelease, box_release, host_mirror

DEB822 = """\
Types: deb-src
URIs: http://src.example.invalid/debian
Suites: bookworm
Components: main

Types: deb
# a comment line inside the stanza
URIs: http://mirror.example.invalid/debian/
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://security.example.invalid/debian-security
Suites: bookworm-security
Components: main
"""


def apt_dir(tmp_path, sources: str | None = None, one_line: str | None = None):
    (tmp_path / "sources.list.d").mkdir()
    if sources is not None:
        (tmp_path / "sources.list.d" / "debian.sources").write_text(sources)
    if one_line is not None:
        (tmp_path / "sources.list").write_text(one_line)
    return tmp_path


def test_deb822_sources_binary_stanza_for_the_suite(tmp_path):
    assert host_mirror(apt_dir(tmp_path, sources=DEB822)) == "http://mirror.example.invalid/debian"


def test_disabled_stanza_is_ignored(tmp_path):
    text = "Types: deb\nURIs: http://off.example.invalid/debian\nSuites: bookworm\nEnabled: no\n\n" + DEB822
    assert host_mirror(apt_dir(tmp_path, sources=text)) == "http://mirror.example.invalid/debian"


def test_one_line_sources_list_with_options(tmp_path):
    text = ("# deb http://commented.example.invalid/debian bookworm main\n"
            "deb [signed-by=/usr/share/keyrings/k.gpg] http://old.example.invalid/debian bookworm main\n")
    assert host_mirror(apt_dir(tmp_path, one_line=text)) == "http://old.example.invalid/debian"


def test_no_source_for_the_suite_says_what_to_do(tmp_path):
    with pytest.raises(MirrorNotFound, match="add the host's Debian bookworm mirror"):
        host_mirror(apt_dir(tmp_path, one_line="deb http://x.example.invalid/debian bullseye main\n"),
                    suite="bookworm")


def test_another_release_comes_from_the_hosts_main_archive(tmp_path):
    # A Debian 12 host lists only bookworm: its main archive (not -security) serves trixie too.
    assert host_mirror(apt_dir(tmp_path, sources=DEB822), suite="trixie") == "http://mirror.example.invalid/debian"


def test_the_release_is_a_parameter():
    assert box_release({}) == "bookworm"
    assert box_release({RELEASE_VARIABLE: "trixie"}) == "trixie"
    with pytest.raises(UnknownRelease, match="use one of bookworm, trixie"):
        box_release({RELEASE_VARIABLE: "sid"})


@pytest.mark.parametrize("release", ["bookworm", "trixie"])
def test_this_host_has_one(release):
    assert host_mirror(suite=release).startswith(("http://", "https://"))
