#!/usr/bin/env python3
"""Generates cross-check vectors for the Rust `crypto` crate with Python's `canonicaljson`
and `signedjson` (independent implementations of the Matrix canonical JSON and JSON signing).

Deterministic: a fixed random seed and a fixed signing key, so rerunning gives the same file.
Each vector has `input` (JSON text, in varied styles: indentation, \\u escapes, surrogate
pairs, key order), `canonical` (canonicaljson's output), `signature` (signedjson's, as
`SERVER`/`KEY_ID`), and `signed` (the signed object as JSON text).

Usage: gen_crypto_vectors.py OUTPUT.json   (see gen_crypto_vectors.sh)
"""

import json
import random
import sys

import canonicaljson
import signedjson.key
import signedjson.sign

SEED_B64 = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"  # the Matrix spec's test seed
SERVER = "alpha.test"
KEY_ID = "ed25519:py1"
COUNT = 240
MAX_INT = 2**53 - 1

KEY_POOL = [
    "", "a", "A", "b", "B", "aa", "aA", "Aa", "ab", "ba", "a b", "a\tb", "a\nb", "\u0000",
    "\u001f", "\u007f", "\"", "\\", "/", "é", "e\u0301", "日", "本", "😀", "😁", "\U0001f600x",
    "\ufffd", "\uffff", "\U00010000", "\U0010ffff", "\u2028", "key", "Key", "KEY", "kEy",
    "signatures_", "unsigned_", "1", "10", "2", "-", "_", "~", "\u00a0", "ß", "ẞ", "ﬀ",
]

CHAR_POOLS = [
    [chr(c) for c in range(0x00, 0x20)],  # control characters
    list("\"\\/'`{}[]:,"),
    [chr(c) for c in range(0x20, 0x7f)],  # printable ASCII
    [chr(0x7f), chr(0x80), chr(0x9f), chr(0xa0), chr(0xff)],
    list("éüñçßøåæœ日本語中文한국어العربيةעבריתрусский"),
    ["\u2028", "\u2029", "\ufeff", "\ufffd", "\uffff", "\ue000", "\u200b", "\u0301"],
    ["😀", "🎉", "👍🏽", "🏳️‍🌈", "\U00010000", "\U0001d11e", "\U0010ffff", "\U000e0001"],
]


def rand_string(rng, max_len=12):
    n = rng.randint(0, max_len)
    out = []
    for _ in range(n):
        out.append(rng.choice(rng.choice(CHAR_POOLS)))
    return "".join(out)


def rand_key(rng):
    return rng.choice(KEY_POOL) if rng.random() < 0.5 else rand_string(rng, 8)


def rand_int(rng):
    choice = rng.random()
    if choice < 0.2:
        return rng.choice([0, 1, -1, MAX_INT, -MAX_INT, MAX_INT - 1, -MAX_INT + 1, 2**31, -(2**31),
                           2**32, 2**63 // 2**11, 10**15, -(10**15)])
    if choice < 0.6:
        return rng.randint(-1000, 1000)
    return rng.randint(-MAX_INT, MAX_INT)


def rand_value(rng, depth):
    kinds = ["null", "bool", "int", "str", "str"]
    if depth < 5:
        kinds += ["list", "obj", "obj"]
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rand_int(rng)
    if kind == "str":
        return rand_string(rng)
    if kind == "list":
        return [rand_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return rand_object(rng, depth + 1)


def rand_object(rng, depth):
    obj = {}
    for _ in range(rng.randint(0, 6)):
        obj[rand_key(rng)] = rand_value(rng, depth)
    return obj


def top_object(rng, i):
    obj = rand_object(rng, 0)
    if i % 7 == 0:
        obj["unsigned"] = {"age_ts": rand_int(rng), "note": rand_string(rng)}
    if i % 11 == 0:
        # Existing signatures by someone else must be kept, and are not signed over.
        obj["signatures"] = {"other.test": {"ed25519:0": "x" * 86}}
    if i % 13 == 0:
        # Keys that differ only in case, and in order of insertion.
        for k in (["b", "B", "a", "A"] if i % 2 else ["A", "a", "B", "b"]):
            obj[k] = i
    return obj


def render(rng, obj):
    """The input as JSON text in a randomly chosen (valid, duplicate-free) style."""
    style = rng.randrange(4)
    if style == 0:
        return json.dumps(obj, ensure_ascii=False)
    if style == 1:
        return json.dumps(obj, ensure_ascii=True)  # \\u escapes, surrogate pairs for astral
    if style == 2:
        return json.dumps(obj, ensure_ascii=rng.random() < 0.5, indent=rng.choice([1, 2, 4, "\t"]))
    # Reverse key order, compact separators.
    def rev(v):
        if isinstance(v, dict):
            return {k: rev(v[k]) for k in reversed(list(v))}
        if isinstance(v, list):
            return [rev(x) for x in v]
        return v
    return json.dumps(rev(obj), ensure_ascii=rng.random() < 0.5, separators=(",", ":"))


def main():
    out_path = sys.argv[1]
    rng = random.Random(20261122)
    key = signedjson.key.decode_signing_key_base64("ed25519", KEY_ID.split(":", 1)[1], SEED_B64)
    verify_key = signedjson.key.get_verify_key(key)
    vectors = []
    fixed = [{}, {"one": 1, "two": "Two"}, {"a": "\u0000\u0008\u0009\u000a\u000b\u000c\u000d\u001f"},
             {"": {"": [""]}}, {"😀": 1, "\ufffd": 2}]
    objs = fixed + [top_object(rng, i) for i in range(COUNT)]
    for obj in objs:
        text = render(rng, obj)
        assert json.loads(text) == obj
        canonical = canonicaljson.encode_canonical_json(json.loads(text)).decode("utf-8")
        signed = signedjson.sign.sign_json(json.loads(text), SERVER, key)
        signedjson.sign.verify_signed_json(signed, SERVER, verify_key)
        vectors.append({
            "input": text,
            "canonical": canonical,
            "signature": signed["signatures"][SERVER][KEY_ID],
            "signed": json.dumps(signed, ensure_ascii=False),
        })
    doc = {
        "generator": "scripts/gen_crypto_vectors.py (canonicaljson 2.0.0, signedjson 1.1.4)",
        "seed": SEED_B64,
        "server_name": SERVER,
        "key_id": KEY_ID,
        "public_key": signedjson.key.encode_verify_key_base64(verify_key),
        "vectors": vectors,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(vectors)} vectors to {out_path}")


if __name__ == "__main__":
    main()
