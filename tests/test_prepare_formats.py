"""Reading each published format into Examples, and one test per kind of bad input (lit_gpt.data.formats, .oasst)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lit_gpt.data.formats import DOLLY_FIELDS, Example, Fields, Skip, read_instructions, read_lima
from lit_gpt.data.oasst import read_oasst
from lit_gpt.prompts import Turn
from lit_gpt.utils import UserError
from prepare_helpers import (
    ALPACA_ROWS,
    DOLLY_ROWS,
    LIMA_CONVERSATIONS,
    OASST_DIR,
    lima_alpaca_layout,
    oasst_trees,
    write_json,
    write_jsonl,
)


def test_alpaca_json_list(tmp_path: Path) -> None:
    rows = [{"instruction": "Say hi", "output": "Hi"}, *ALPACA_ROWS[:2]]  # `input` may be missing
    examples = list(read_instructions(write_json(tmp_path / "alpaca.json", rows)))
    assert [e.turns for e in examples] == [
        (Turn("Say hi", "Hi"),),
        (Turn("Name three primary colors.", "Red, blue and yellow."),),
        (Turn("Translate to French.", "Bonjour", "Good morning"),),
    ]
    assert [(e.row, e.line, e.category, e.problem) for e in examples] == [(i, None, None, None) for i in range(3)]


def test_dolly_jsonl_maps_context_and_category(tmp_path: Path) -> None:
    path = tmp_path / "dolly.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in DOLLY_ROWS[:2]).replace("\n", "\n\n", 1) + "\n")  # a blank line
    examples = list(read_instructions(path, DOLLY_FIELDS))
    assert examples[0].turns == (Turn(DOLLY_ROWS[0]["instruction"], "On 31 August 2000.", DOLLY_ROWS[0]["context"]),)
    assert [(e.row, e.line, e.category) for e in examples] == [(0, 1, "closed_qa"), (1, 3, "classification")]


def test_lima_both_layouts_give_the_same_conversations(tmp_path: Path) -> None:
    gair = list(read_lima(write_jsonl(tmp_path / "train.jsonl", LIMA_CONVERSATIONS)))
    factory = list(read_lima(write_json(tmp_path / "lima.json", lima_alpaca_layout(LIMA_CONVERSATIONS))))
    assert [e.turns for e in gair] == [e.turns for e in factory]
    assert gair[1].turns == (Turn("Write a haiku.", "Quiet pond, a frog."), Turn("Another one?", "Snow on the pine."))
    assert [e.category for e in gair] == ["stackexchange", "wikihow", "reddit"]
    assert [e.category for e in factory] == [None] * 3  # LLaMA-Factory's copy dropped `source`


def test_lima_conversation_ending_with_a_user_turn_is_incomplete(tmp_path: Path) -> None:
    rows = [{"conversations": ["Hello?", "Hi.", "Still there?"], "source": "reddit"}]
    (example,) = read_lima(write_jsonl(tmp_path / "train.jsonl", rows))
    assert example.turns == (Turn("Hello?", "Hi."),)
    assert example.problem == "'conversations' ends with a user turn"


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_csv_any_column_order_quoted_multiline_cells_and_bom(tmp_path: Path, newline: str) -> None:
    lines = [
        "output,notes,instruction,input",
        '"Line one\nline two, with a comma",x,"Say ""two lines""",',
        "B,y,Second,ctx",
    ]
    path = tmp_path / "MyDataset.csv"
    path.write_bytes(b"\xef\xbb\xbf" + newline.join(lines).encode() + newline.encode())  # Excel's "CSV UTF-8"
    examples = list(read_instructions(path))
    assert [e.turns for e in examples] == [
        (Turn('Say "two lines"', "Line one\nline two, with a comma"),),
        (Turn("Second", "B", "ctx"),),
    ]
    assert [(e.row, e.line) for e in examples] == [(0, 2), (1, 3)]  # spreadsheet rows: the two-line cell is one


def test_json_with_mapped_field_names_history_and_gzip(tmp_path: Path) -> None:
    rows = [{"q": "Second?", "a": "Yes.", "past": [["First?", "No."]], "task": "qa"}]
    path = tmp_path / "qa.jsonl.gz"
    path.write_bytes(gzip.compress(json.dumps(rows[0]).encode()))
    fields = Fields(instruction="q", output="a", input=None, history="past", category="task")
    (example,) = read_instructions(path, fields)
    assert example.turns == (Turn("First?", "No."), Turn("Second?", "Yes."))
    assert example.category == "qa"


def test_text_hash_is_equal_for_exact_duplicates_only(tmp_path: Path) -> None:
    examples = list(read_instructions(write_json(tmp_path / "a.json", ALPACA_ROWS)))
    hashes = [e.text_sha256() for e in examples]
    assert hashes[0] == hashes[5] and len(set(hashes)) == 5


def test_oasst_best_ranked_path_language_filter_and_unanswered_trees(tmp_path: Path) -> None:
    items = list(read_oasst(write_jsonl(tmp_path / "messages.jsonl", oasst_trees()), lang="en"))
    assert isinstance(items[0], Example)
    # rank 0 at each level; the deleted reply and the rank-1 siblings are never followed
    assert items[0].turns == (
        Turn("How do I save for retirement?", "Use a 401k with low fees."),
        Turn("What about index funds?", "They track the market at low cost."),
    )
    assert items[1:] == [Skip(1, "language de"), Skip(2, "no assistant reply")]
    assert [type(i) for i in read_oasst(tmp_path / "messages.jsonl", lang=None)] == [Example, Example, Skip]


def test_oasst_tree_export_layout_reads_like_the_message_layout(tmp_path: Path) -> None:
    trees = [{"message_tree_id": t["message_id"], "tree_state": "ready_for_export", "prompt": t} for t in oasst_trees()]
    trees.append({"message_tree_id": "x", "tree_state": "aborted_low_grade", "prompt": oasst_trees()[0]})
    from_trees = list(read_oasst(write_jsonl(tmp_path / "trees.jsonl", trees)))
    from_messages = list(read_oasst(write_jsonl(tmp_path / "messages.jsonl", oasst_trees())))
    assert from_trees[:3] == from_messages
    assert from_trees[3] == Skip(3, "tree_state aborted_low_grade")


@pytest.mark.skipif(not OASST_DIR.is_dir(), reason="../shared/data/oasst missing")
def test_real_oasst_files_in_both_layouts_agree() -> None:
    from_trees = list(read_oasst(OASST_DIR / "en_100_tree.jsonl"))
    from_messages = list(read_oasst(OASST_DIR / "en_100_message.jsonl"))
    assert len(from_trees) == len(from_messages) == 100
    assert [getattr(e, "turns", e) for e in from_trees] == [getattr(e, "turns", e) for e in from_messages]
    assert sum(isinstance(e, Example) for e in from_trees) >= 90


# -- bad input: one UserError naming file, row/line and field --------------------------------------------------


def _error(path: Path, fields: Fields = Fields()) -> str:
    with pytest.raises(UserError) as e:
        list(read_instructions(path, fields))
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    return message


def test_csv_missing_column(tmp_path: Path) -> None:
    (path := tmp_path / "d.csv").write_text("instruction,answer\nHi,Hello\n")
    assert "header has no 'output' column (columns: instruction, answer)" in _error(path)


def test_csv_row_with_too_many_cells(tmp_path: Path) -> None:
    (path := tmp_path / "d.csv").write_text("instruction,output\nHi,Hello\nOne, two, three,four\n")
    assert "d.csv, row 3: 4 cells, but the header has 2 columns" in _error(path)


def test_csv_errors_name_the_spreadsheet_row(tmp_path: Path) -> None:
    # header = row 1; a blank line is a row of its own; a quoted cell spanning two lines stays one row
    (path := tmp_path / "d.csv").write_text(
        'instruction,output\nHi,Hello\n\n"Two\nlines",Yes\nA,B\nOne,two,three\n'
    )
    assert "d.csv, row 6: 3 cells, but the header has 2 columns" in _error(path)


def test_json_missing_field(tmp_path: Path) -> None:
    path = write_json(tmp_path / "d.json", [{"instruction": "a", "output": "b"}, {"instruction": "c", "response": "d"}])
    assert "d.json, record 2: missing field 'output' (fields present: 'instruction', 'response')" in _error(path)


def test_json_wrong_type(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "What is 2 + 2?", "output": 4}])
    assert "d.jsonl, line 1: field 'output' must be a string, found int 4" in _error(path)


def test_history_of_the_wrong_shape(tmp_path: Path) -> None:
    path = write_json(tmp_path / "d.json", [{"instruction": "a", "output": "b", "history": ["just one string"]}])
    assert "field 'history' must be a list of [instruction, response] pairs" in _error(path, Fields(history="history"))


def test_json_list_of_strings(tmp_path: Path) -> None:
    assert "d.json, record 1: expected a JSON object, found str" in _error(write_json(tmp_path / "d.json", ["a", "b"]))


def test_invalid_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n\n{"instruction": "c", "output": }\n')
    assert "line 3, column 32: invalid JSON: Expecting value" in _error(path)


def test_invalid_json_list_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c" "output": "d"}\n]')
    assert "line 3, column 23: invalid JSON: Expecting ',' delimiter" in _error(path)


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes("instruction,output\nCafé,ok\n".encode() + "Crème,brûlée\n".encode("latin-1"))
    assert "line 3: not UTF-8 text (byte 0xe8 at offset 30); re-save the file as UTF-8" in _error(path)


@pytest.mark.parametrize("content", [b"", b"  \n\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    (path := tmp_path / "d.jsonl").write_bytes(content)
    assert "is empty" in _error(path)


def test_missing_file(tmp_path: Path) -> None:
    assert "does not exist; check --data_file" in _error(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "row, problem",
    [
        ({"instruction": " ", "output": "b"}, "empty 'instruction'"),
        ({"instruction": "a", "output": ""}, "empty 'output'"),
        ({"instruction": "a", "output": "b", "history": [["", "x"]]}, "empty 'history[0][0]'"),
    ],
)
def test_empty_instruction_or_output_is_recorded_as_the_rows_problem(tmp_path: Path, row: dict, problem: str) -> None:
    # whether it stops the run or is dropped is the pipeline's --incomplete_rows (tested in test_prepare_scripts.py)
    (example,) = read_instructions(write_json(tmp_path / "d.json", [row]), Fields(history="history"))
    assert example.problem == problem
