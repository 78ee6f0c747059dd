"""download() against a local HTTP server: verification, atomic placement, mirror fallback."""

from __future__ import annotations

import hashlib

import pytest

from gibbon.data.download import DownloadError, download, file_digest

BODY = b"gibbon test payload " * 5000
SHA = hashlib.sha256(BODY).hexdigest()


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir())


def test_correct_file_is_accepted(http_server, tmp_path):
    http_server.files["/f.bin"] = BODY
    dest = tmp_path / "sub" / "f.bin"
    assert download(http_server.url + "/f.bin", dest, SHA, size=len(BODY)) == dest
    assert dest.read_bytes() == BODY and _leftovers(dest.parent) == ["f.bin"]


def test_md5_and_progress(http_server, tmp_path):
    http_server.files["/f.bin"] = BODY
    dest = tmp_path / "f.bin"
    download([http_server.url + "/f.bin"], dest, hashlib.md5(BODY).hexdigest().upper(), "md5", progress=True)
    assert file_digest(dest, "md5") == hashlib.md5(BODY).hexdigest()


def test_wrong_checksum_is_rejected_and_nothing_left(http_server, tmp_path):
    http_server.files["/f.bin"] = BODY
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="sha256 mismatch") as e:
        download(http_server.url + "/f.bin", dest, "0" * 64)
    assert "GIBBON_DATA" in str(e.value)
    assert _leftovers(tmp_path) == []


def test_truncated_body_is_rejected(http_server, tmp_path):
    http_server.files["/f.bin"] = BODY
    http_server.truncated.add("/f.bin")
    with pytest.raises(DownloadError, match=r"(?i)incomplete|truncated"):
        download(http_server.url + "/f.bin", tmp_path / "f.bin", SHA)
    assert _leftovers(tmp_path) == []


def test_different_file_is_rejected_by_size(http_server, tmp_path):
    http_server.files["/f.bin"] = BODY[:-10]
    with pytest.raises(DownloadError, match="wrong size"):
        download(http_server.url + "/f.bin", tmp_path / "f.bin", SHA, size=len(BODY))
    assert _leftovers(tmp_path) == []


def test_first_mirror_404_then_second_works(http_server, tmp_path):
    http_server.files["/b/f.bin"] = BODY
    dest = tmp_path / "f.bin"
    download([http_server.url + "/a/f.bin", http_server.url + "/b/f.bin"], dest, SHA)
    assert dest.read_bytes() == BODY and _leftovers(tmp_path) == ["f.bin"]


def test_all_mirrors_fail_lists_each(http_server, tmp_path):
    http_server.files["/b/f.bin"] = b"something else"
    urls = [http_server.url + "/a/f.bin", http_server.url + "/b/f.bin", "file:///etc/passwd"]
    with pytest.raises(DownloadError) as e:
        download(urls, tmp_path / "f.bin", SHA)
    msg = str(e.value)
    assert "HTTP 404" in msg and "mismatch" in msg and "only http(s)" in msg
    assert _leftovers(tmp_path) == []


def test_existing_verified_file_is_kept(http_server, tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(BODY)
    download(http_server.url + "/missing", dest, SHA)  # no request needed
    assert dest.read_bytes() == BODY


def test_existing_bad_file_is_replaced(http_server, tmp_path):
    http_server.files["/f.bin"] = BODY
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"stale")
    download(http_server.url + "/f.bin", dest, SHA)
    assert dest.read_bytes() == BODY
