"""nt_llm.atomic: a folder (or file) is the old one or the complete new one, and no temporary name is left behind."""

from pathlib import Path

import pytest

from nt_llm import atomic


def _write_old(final: Path) -> None:
    final.mkdir(parents=True)
    (final / "a.txt").write_text("old a")
    (final / "sub").mkdir()
    (final / "sub" / "b.txt").write_text("old b")


def _contents(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_folder_is_created_with_ordinary_permissions(tmp_path: Path) -> None:
    final = tmp_path / "deep" / "out"
    with atomic.atomic_folder(final) as tmp:
        assert tmp.parent == final.parent and not final.exists()
        (tmp / "x.txt").write_text("x")
    assert _contents(final) == {"x.txt": "x"}
    mask = atomic.umask()
    assert final.stat().st_mode & 0o777 == 0o777 & ~mask
    assert (final / "x.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in final.parent.iterdir()] == ["out"]


def test_a_complete_write_replaces_the_old_folder_whole(tmp_path: Path) -> None:
    final = tmp_path / "out"
    _write_old(final)
    with atomic.atomic_folder(final) as tmp:
        (tmp / "c.txt").write_text("new c")
    assert _contents(final) == {"c.txt": "new c"}  # nothing of the old folder is mixed in
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failure_while_writing_keeps_the_old_folder_and_leaves_no_temporary(tmp_path: Path) -> None:
    final = tmp_path / "out"
    _write_old(final)
    before = _contents(final)
    with pytest.raises(RuntimeError, match="disk full"), atomic.atomic_folder(final) as tmp:
        (tmp / "a.txt").write_text("half of the new a")
        raise RuntimeError("disk full")
    assert _contents(final) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_interrupt_while_writing_a_new_folder_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), atomic.atomic_folder(final) as tmp:
        (tmp / "a.txt").write_text("a")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_failed_swap_puts_the_old_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = tmp_path / "out"
    _write_old(final)
    before = _contents(final)
    rename = Path.rename

    def failing_rename(self: Path, target: Path) -> Path:
        if self.name.startswith(".out.tmp-"):  # the new folder's rename into place
            raise OSError("rename refused")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError, match="rename refused"), atomic.atomic_folder(final) as tmp:
        (tmp / "c.txt").write_text("new c")
    assert _contents(final) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_swap_in_replaces_a_file_too(tmp_path: Path) -> None:
    final, new = tmp_path / "out", tmp_path / ".out.new"
    final.write_text("a file where the folder goes")
    new.mkdir()
    (new / "x.txt").write_text("x")
    atomic.swap_in(new, final)
    assert _contents(final) == {"x.txt": "x"} and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_write_text_replaces_a_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "card.md"
    path.write_text("old")
    atomic.write_text(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o666 & ~atomic.umask()
    assert [p.name for p in tmp_path.iterdir()] == ["card.md"]
