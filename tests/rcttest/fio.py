"""fio's JSON output (--output-format=json)."""
import json


def load(path):
    """The JSON document in a fio output file (fio may print warnings first)."""
    text = open(path).read()
    return json.loads(text[text.index("{"):])


def job(path):
    """The first job of a fio output file; exits 1 if fio reports an error
    for it."""
    j = load(path)["jobs"][0]
    if j.get("error"):
        raise SystemExit(1)
    return j
