//! The hashes family's conformance checks (see tests/commands.rs). Replies
//! whose order Redis leaves unspecified are compared sorted; random ones
//! (HRANDFIELD, HSCAN's order) by their properties. Edge cases follow
//! Redis's own tests/unit/type/hash.tcl.

use std::collections::{HashMap, HashSet};

use crate::*;

pub async fn hashes(t: &Target) {
    let mut con = t.con().await;
    basics(&mut con).await;
    errors(&mut con).await;
    hincrby(&mut con).await;
    hincrbyfloat(&mut con).await;
    big_hash(&mut con).await;
    hrandfield(&mut con).await;
    hscan(&mut con).await;
    resp3(t).await;
}

const WRONG: Expect = Err("WRONGTYPE Operation against a key holding the wrong kind of value");

/// Field/value pairs of an HGETALL-like reply, sorted by field.
fn sorted_pairs(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pairs(v).into_iter().map(|(k, v)| (k, text(&v))).collect();
    out.sort();
    out
}

fn owned(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    out.sort();
    out
}

/// Texts of an array reply, in the order sent.
fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(text).collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

/// HSETs the pairs in one command.
async fn hset(con: &mut Con, key: &str, items: impl IntoIterator<Item = (String, String)>) {
    let mut c = redis::cmd("HSET");
    c.arg(key);
    for (f, v) in items {
        c.arg(f).arg(v);
    }
    reply(con, &c).await.expect("HSET");
}

async fn basics(con: &mut Con) {
    table(
        con,
        rows! {
            ["HSET", "h", "a", "1"] => Ok(int(1)),
            ["HSET", "h", "a", "2", "b", "3"] => Ok(int(1)),
            // A field given twice counts once and ends with its last value.
            ["HSET", "h", "c", "x", "c", "y", "a", "z"] => Ok(int(1)),
            ["HGET", "h", "a"] => Ok(bulk("z")),
            ["HGET", "h", "c"] => Ok(bulk("y")),
            ["HGET", "h", "nope"] => Ok(nil()),
            ["HGET", "missing", "a"] => Ok(nil()),
            ["HLEN", "h"] => Ok(int(3)),
            ["HLEN", "missing"] => Ok(int(0)),
            ["TYPE", "h"] => Ok(status("hash")),
            ["EXISTS", "h"] => Ok(int(1)),
            ["HMGET", "h", "a", "nope", "b", "a"] => Ok(array(vec![bulk("z"), nil(), bulk("3"), bulk("z")])),
            ["HMGET", "missing", "a", "b"] => Ok(array(vec![nil(), nil()])),
            ["HEXISTS", "h", "a"] => Ok(int(1)),
            ["HEXISTS", "h", "nope"] => Ok(int(0)),
            ["HEXISTS", "missing", "a"] => Ok(int(0)),
            ["HSTRLEN", "h", "a"] => Ok(int(1)),
            ["HSTRLEN", "h", "nope"] => Ok(int(0)),
            ["HSTRLEN", "missing", "a"] => Ok(int(0)),
            ["HSETNX", "h", "a", "new"] => Ok(int(0)),
            ["HGET", "h", "a"] => Ok(bulk("z")),
            ["HSETNX", "h", "d", "4"] => Ok(int(1)),
            ["HGET", "h", "d"] => Ok(bulk("4")),
            ["HSETNX", "fresh", "f", "v"] => Ok(int(1)),
            ["HGETALL", "fresh"] => Ok(array(vec![bulk("f"), bulk("v")])),
            ["HKEYS", "fresh"] => Ok(array(vec![bulk("f")])),
            ["HVALS", "fresh"] => Ok(array(vec![bulk("v")])),
            ["HMSET", "h", "e", "5", "a", "1"] => Ok(okay()),
            ["HMSET", "h", "e", "6", "e", "7"] => Ok(okay()),
            ["HGET", "h", "e"] => Ok(bulk("7")),
            ["HGETALL", "missing"] => Ok(array(vec![])),
            ["HKEYS", "missing"] => Ok(array(vec![])),
            ["HVALS", "missing"] => Ok(array(vec![])),
            // Empty fields and values are fields and values.
            ["HSET", "h", "", ""] => Ok(int(1)),
            ["HGET", "h", ""] => Ok(bulk("")),
            ["HEXISTS", "h", ""] => Ok(int(1)),
            ["HSTRLEN", "h", ""] => Ok(int(0)),
            ["HDEL", "h", ""] => Ok(int(1)),
            // HDEL counts what it removed; repeats and missing fields don't.
            ["HDEL", "h", "nope"] => Ok(int(0)),
            ["HDEL", "h", "a", "a", "nope"] => Ok(int(1)),
            ["HDEL", "h", "a"] => Ok(int(0)),
            ["HDEL", "missing", "a"] => Ok(int(0)),
            ["HLEN", "h"] => Ok(int(4)),
            // Deleting the last fields deletes the key (more named than left).
            ["HDEL", "h", "b", "c", "d", "e", "x", "y"] => Ok(int(4)),
            ["EXISTS", "h"] => Ok(int(0)),
            ["TYPE", "h"] => Ok(status("none")),
            ["HLEN", "h"] => Ok(int(0)),
        },
    )
    .await;
    q(con, &["HSET", "h", "a", "1", "b", "2", "c", "3"]).await;
    let all = q(con, &["HGETALL", "h"]).await;
    assert_eq!(
        sorted_pairs(&all),
        owned(&[("a", "1"), ("b", "2"), ("c", "3")])
    );
    assert_eq!(
        sorted_texts(&q(con, &["HKEYS", "h"]).await),
        ["a", "b", "c"]
    );
    assert_eq!(
        sorted_texts(&q(con, &["HVALS", "h"]).await),
        ["1", "2", "3"]
    );
    // HKEYS, HVALS and HGETALL walk the hash in one order.
    let keys = texts(&q(con, &["HKEYS", "h"]).await);
    let vals = texts(&q(con, &["HVALS", "h"]).await);
    let flat: Vec<String> = keys
        .iter()
        .zip(&vals)
        .flat_map(|(k, v)| [k.clone(), v.clone()])
        .collect();
    assert_eq!(texts(&all), flat);

    // Binary-safe fields and values.
    let mut c = redis::cmd("HSET");
    c.arg("bin").arg(&b"f\0\r\n"[..]).arg(&b"\xff\0v"[..]);
    assert_eq!(reply(con, &c).await, Ok(int(1)));
    let mut c = redis::cmd("HGET");
    c.arg("bin").arg(&b"f\0\r\n"[..]);
    assert_eq!(reply(con, &c).await, Ok(bulk(b"\xff\0v")));
    let mut c = redis::cmd("HSTRLEN");
    c.arg("bin").arg(&b"f\0\r\n"[..]);
    assert_eq!(reply(con, &c).await, Ok(int(3)));

    table(
        con,
        rows! {
            // HSTRLEN is the length of the value as written (hash.tcl's
            // corner cases: integers are not re-encoded).
            ["HSET", "n", "f", "-9223372036854775808"] => Ok(int(1)),
            ["HSTRLEN", "n", "f"] => Ok(int(20)),
            ["HSET", "n", "f", "9223372036854775808"] => Ok(int(0)),
            ["HSTRLEN", "n", "f"] => Ok(int(19)),
            ["HSET", "n", "f", "007"] => Ok(int(0)),
            ["HSTRLEN", "n", "f"] => Ok(int(3)),
            ["HGET", "n", "f"] => Ok(bulk("007")),
            ["HSET", "n", "f", ""] => Ok(int(0)),
            ["HSTRLEN", "n", "f"] => Ok(int(0)),
            // A TTL stays through writes to the fields.
            ["HSET", "ttl1", "a", "1", "b", "2"] => Ok(int(2)),
            ["EXPIRE", "ttl1", "100"] => Ok(int(1)),
            ["HSET", "ttl1", "c", "3"] => Ok(int(1)),
            ["HDEL", "ttl1", "a"] => Ok(int(1)),
            ["HINCRBY", "ttl1", "n", "1"] => Ok(int(1)),
            ["HINCRBYFLOAT", "ttl1", "n", "1.5"] => Ok(bulk("2.5")),
            ["HSETNX", "ttl1", "d", "1"] => Ok(int(1)),
            ["TTL", "ttl1"] => Ok(int(100)),
            // A hash emptied and created again has no TTL, as a deleted key.
            ["HDEL", "ttl1", "b", "c", "n", "d"] => Ok(int(4)),
            ["HSET", "ttl1", "z", "1"] => Ok(int(1)),
            ["TTL", "ttl1"] => Ok(int(-1)),
            ["HSET", "ttl2", "a", "1"] => Ok(int(1)),
            ["EXPIRE", "ttl2", "100"] => Ok(int(1)),
            ["DEL", "ttl2"] => Ok(int(1)),
            ["HINCRBY", "ttl2", "a", "1"] => Ok(int(1)),
            ["TTL", "ttl2"] => Ok(int(-1)),
            // SET replaces a hash whole.
            ["SET", "ttl2", "str"] => Ok(okay()),
            ["GET", "ttl2"] => Ok(bulk("str")),
            ["HGET", "ttl2", "a"] => WRONG,
            ["DEL", "ttl2"] => Ok(int(1)),
            ["HGET", "ttl2", "a"] => Ok(nil()),
        },
    )
    .await;
    q(con, &["FLUSHALL"]).await;
}

fn arity(name: &str) -> Expect {
    // The table holds 'static texts; a test may leak a few.
    let line = format!("ERR wrong number of arguments for '{name}' command");
    Err(Box::leak(line.into_boxed_str()))
}

async fn errors(con: &mut Con) {
    table(
        con,
        rows! {
            ["HSET"] => arity("hset"),
            ["HSET", "h"] => arity("hset"),
            ["HSET", "h", "a"] => arity("hset"),
            // An odd number of fields and values.
            ["HSET", "h", "a", "1", "b"] => arity("hset"),
            ["HMSET", "h", "a"] => arity("hmset"),
            ["HMSET", "h", "a", "1", "b"] => arity("hmset"),
            ["EXISTS", "h"] => Ok(int(0)),
            ["HSETNX", "h", "a"] => arity("hsetnx"),
            ["HSETNX", "h", "a", "1", "2"] => arity("hsetnx"),
            ["HGET", "h"] => arity("hget"),
            ["HGET", "h", "a", "b"] => arity("hget"),
            ["HMGET", "h"] => arity("hmget"),
            ["HGETALL"] => arity("hgetall"),
            ["HGETALL", "h", "x"] => arity("hgetall"),
            ["HDEL", "h"] => arity("hdel"),
            ["HEXISTS", "h"] => arity("hexists"),
            ["HLEN"] => arity("hlen"),
            ["HLEN", "h", "x"] => arity("hlen"),
            ["HSTRLEN", "h"] => arity("hstrlen"),
            ["HKEYS"] => arity("hkeys"),
            ["HVALS"] => arity("hvals"),
            ["HINCRBY", "h", "a"] => arity("hincrby"),
            ["HINCRBY", "h", "a", "1", "2"] => arity("hincrby"),
            ["HINCRBYFLOAT", "h", "a"] => arity("hincrbyfloat"),
            ["HRANDFIELD"] => arity("hrandfield"),
            ["HSCAN", "h"] => arity("hscan"),
            // Every command refuses a key of another type, and changes nothing.
            ["SET", "str", "x"] => Ok(okay()),
            ["HSET", "str", "a", "1"] => WRONG,
            ["HMSET", "str", "a", "1"] => WRONG,
            ["HSETNX", "str", "a", "1"] => WRONG,
            ["HGET", "str", "a"] => WRONG,
            ["HMGET", "str", "a", "b"] => WRONG,
            ["HGETALL", "str"] => WRONG,
            ["HDEL", "str", "a"] => WRONG,
            ["HEXISTS", "str", "a"] => WRONG,
            ["HLEN", "str"] => WRONG,
            ["HSTRLEN", "str", "a"] => WRONG,
            ["HKEYS", "str"] => WRONG,
            ["HVALS", "str"] => WRONG,
            ["HINCRBY", "str", "a", "1"] => WRONG,
            ["HINCRBYFLOAT", "str", "a", "1"] => WRONG,
            ["HRANDFIELD", "str"] => WRONG,
            ["HRANDFIELD", "str", "0"] => WRONG,
            ["HRANDFIELD", "str", "-2", "WITHVALUES"] => WRONG,
            ["HSCAN", "str", "0"] => WRONG,
            ["HSCAN", "str", "0", "COUNT", "0"] => WRONG,
            ["GET", "str"] => Ok(bulk("x")),
            ["TYPE", "str"] => Ok(status("string")),
            // Increments are checked before the key's type, as in Redis.
            ["HINCRBY", "str", "a", "x"] => Err("ERR value is not an integer or out of range"),
            ["HINCRBYFLOAT", "str", "a", "x"] => Err("ERR value is not a valid float"),
            ["HINCRBYFLOAT", "str", "a", "inf"] => Err("ERR value is NaN or Infinity"),
            // And so are HRANDFIELD's count and options and HSCAN's cursor.
            ["HRANDFIELD", "str", "x"] => Err("ERR value is not an integer or out of range"),
            ["HRANDFIELD", "str", "1", "x"] => Err("ERR syntax error"),
            ["HSCAN", "str", "x"] => Err("ERR invalid cursor"),
        },
    )
    .await;
    q(con, &["FLUSHALL"]).await;
}

async fn hincrby(con: &mut Con) {
    table(con, rows! {
        ["HINCRBY", "h", "f", "2"] => Ok(int(2)),
        ["HGET", "h", "f"] => Ok(bulk("2")),
        ["HINCRBY", "h", "f", "3"] => Ok(int(5)),
        ["HINCRBY", "h", "f", "-10"] => Ok(int(-5)),
        ["HGET", "h", "f"] => Ok(bulk("-5")),
        ["HSTRLEN", "h", "f"] => Ok(int(2)),
        ["HSET", "h", "f", "100"] => Ok(int(0)),
        ["HINCRBY", "h", "f", "2"] => Ok(int(102)),
        ["HSET", "h", "g", "17179869184"] => Ok(int(1)),
        ["HINCRBY", "h", "g", "1"] => Ok(int(17179869185)),
        ["HSET", "h", "g", "17179869184"] => Ok(int(0)),
        ["HINCRBY", "h", "g", "17179869184"] => Ok(int(34359738368)),
        // Back to zero is a field holding "0", not a missing field.
        ["HINCRBY", "z", "f", "5"] => Ok(int(5)),
        ["HINCRBY", "z", "f", "-5"] => Ok(int(0)),
        ["HGET", "z", "f"] => Ok(bulk("0")),
        ["HLEN", "z"] => Ok(int(1)),
        ["HINCRBY", "z", "g", "0"] => Ok(int(0)),
        ["HGET", "z", "g"] => Ok(bulk("0")),
        ["HINCRBY", "z", "g", "0"] => Ok(int(0)),
        // A field deleted after increments starts again from zero.
        ["HDEL", "z", "f"] => Ok(int(1)),
        ["HEXISTS", "z", "f"] => Ok(int(0)),
        ["HINCRBY", "z", "f", "7"] => Ok(int(7)),
        ["HSET", "z", "f", "1"] => Ok(int(0)),
        ["HINCRBY", "z", "f", "1"] => Ok(int(2)),
        ["DEL", "z"] => Ok(int(1)),
        ["HINCRBY", "z", "f", "1"] => Ok(int(1)),
        // Values with spaces, leading zeros, "-0", fractions: no integers.
        ["HSET", "h", "s", " 11"] => Ok(int(1)),
        ["HINCRBY", "h", "s", "1"] => Err("ERR hash value is not an integer"),
        ["HSET", "h", "s", "11 "] => Ok(int(0)),
        ["HINCRBY", "h", "s", "1"] => Err("ERR hash value is not an integer"),
        ["HSET", "h", "s", "011"] => Ok(int(0)),
        ["HINCRBY", "h", "s", "1"] => Err("ERR hash value is not an integer"),
        ["HSET", "h", "s", "-0"] => Ok(int(0)),
        ["HINCRBY", "h", "s", "1"] => Err("ERR hash value is not an integer"),
        ["HSET", "h", "s", "1.5"] => Ok(int(0)),
        ["HINCRBY", "h", "s", "1"] => Err("ERR hash value is not an integer"),
        ["HSET", "h", "s", "abc"] => Ok(int(0)),
        ["HINCRBY", "h", "s", "1"] => Err("ERR hash value is not an integer"),
        ["HSET", "h", "s", ""] => Ok(int(0)),
        ["HINCRBY", "h", "s", "1"] => Err("ERR hash value is not an integer"),
        ["HGET", "h", "s"] => Ok(bulk("")),
        // A float result is no integer any more.
        ["HINCRBYFLOAT", "h", "f", "0.5"] => Ok(bulk("102.5")),
        ["HINCRBY", "h", "f", "1"] => Err("ERR hash value is not an integer"),
        ["HINCRBYFLOAT", "h", "f", "0.5"] => Ok(bulk("103")),
        ["HINCRBY", "h", "f", "1"] => Ok(int(104)),
        // Bad increments.
        ["HINCRBY", "h", "f", "x"] => Err("ERR value is not an integer or out of range"),
        ["HINCRBY", "h", "f", "1.5"] => Err("ERR value is not an integer or out of range"),
        ["HINCRBY", "h", "f", ""] => Err("ERR value is not an integer or out of range"),
        ["HINCRBY", "h", "f", "9223372036854775808"] => Err("ERR value is not an integer or out of range"),
        ["HINCRBY", "h", "new", "x"] => Err("ERR value is not an integer or out of range"),
        ["HEXISTS", "h", "new"] => Ok(int(0)),
        // Overflow is refused and changes nothing (hash.tcl).
        ["HSET", "h", "n", "-9223372036854775484"] => Ok(int(1)),
        ["HINCRBY", "h", "n", "-1"] => Ok(int(-9223372036854775485)),
        ["HINCRBY", "h", "n", "-10000"] => Err("ERR increment or decrement would overflow"),
        ["HINCRBY", "h", "n", "-323"] => Ok(int(-9223372036854775808)),
        ["HINCRBY", "h", "n", "-1"] => Err("ERR increment or decrement would overflow"),
        ["HINCRBY", "h", "n", "9223372036854775807"] => Ok(int(-1)),
        ["HSET", "h", "m", "9223372036854775807"] => Ok(int(1)),
        ["HINCRBY", "h", "m", "1"] => Err("ERR increment or decrement would overflow"),
        ["HINCRBY", "h", "m", "0"] => Ok(int(9223372036854775807)),
        ["HGET", "h", "m"] => Ok(bulk("9223372036854775807")),
        ["HINCRBY", "h", "m", "-9223372036854775807"] => Ok(int(0)),
        ["HINCRBY", "h", "m", "-9223372036854775808"] => Ok(int(-9223372036854775808)),
        ["HINCRBY", "fresh", "f", "-9223372036854775808"] => Ok(int(-9223372036854775808)),
        ["HINCRBY", "fresh", "f", "-1"] => Err("ERR increment or decrement would overflow"),
        ["HGET", "fresh", "f"] => Ok(bulk("-9223372036854775808")),
    })
    .await;
    q(con, &["FLUSHALL"]).await;
}

async fn hincrbyfloat(con: &mut Con) {
    table(
        con,
        rows! {
            ["HINCRBYFLOAT", "h", "f", "2.5"] => Ok(bulk("2.5")),
            ["HGET", "h", "f"] => Ok(bulk("2.5")),
            ["HINCRBYFLOAT", "h", "f", "3.5"] => Ok(bulk("6")),
            ["HGET", "h", "f"] => Ok(bulk("6")),
            ["HINCRBY", "h", "f", "1"] => Ok(int(7)),
            ["HSET", "h", "f", "100"] => Ok(int(0)),
            ["HINCRBYFLOAT", "h", "f", "2.5"] => Ok(bulk("102.5")),
            ["HSET", "h", "g", "17179869184"] => Ok(int(1)),
            ["HINCRBYFLOAT", "h", "g", "1"] => Ok(bulk("17179869185")),
            ["HSET", "h", "g", "17179869184"] => Ok(int(0)),
            ["HINCRBYFLOAT", "h", "g", "17179869184"] => Ok(bulk("34359738368")),
            // Redis's representation (issue #2846) and exponents.
            ["HINCRBYFLOAT", "r", "f", "1.23"] => Ok(bulk("1.23")),
            ["HINCRBYFLOAT", "r", "f", "0.77"] => Ok(bulk("2")),
            ["HINCRBYFLOAT", "r", "f", "-0.1"] => Ok(bulk("1.9")),
            ["HINCRBYFLOAT", "r", "g", "0.1"] => Ok(bulk("0.1")),
            ["HINCRBYFLOAT", "r", "g", "0.2"] => Ok(bulk("0.3")),
            ["HINCRBYFLOAT", "r", "e", "5.0e3"] => Ok(bulk("5000")),
            ["HINCRBYFLOAT", "r", "e", "-5000"] => Ok(bulk("0")),
            ["HGET", "r", "e"] => Ok(bulk("0")),
            ["HSET", "r", "e", "1e3"] => Ok(int(0)),
            ["HINCRBYFLOAT", "r", "e", "1.5"] => Ok(bulk("1001.5")),
            ["HINCRBYFLOAT", "r", "p", ".5"] => Ok(bulk("0.5")),
            ["HINCRBYFLOAT", "r", "p", "1."] => Ok(bulk("1.5")),
            ["HINCRBYFLOAT", "r", "p", "+2"] => Ok(bulk("3.5")),
            ["HINCRBYFLOAT", "r", "p", "-3.5"] => Ok(bulk("0")),
            ["HSET", "r", "n", "-0.5"] => Ok(int(1)),
            ["HINCRBYFLOAT", "r", "n", "0.5"] => Ok(bulk("0")),
            ["HINCRBYFLOAT", "r", "d", "0.123456789012345678"] => Ok(bulk("0.12345678901234568")),
            ["HINCRBYFLOAT", "r", "t", "1e-30"] => Ok(bulk("0")),
            // Adding zero rewrites the value in Redis's form.
            ["HSET", "r", "c", "1.50"] => Ok(int(1)),
            ["HINCRBYFLOAT", "r", "c", "0"] => Ok(bulk("1.5")),
            ["HGET", "r", "c"] => Ok(bulk("1.5")),
            ["HSET", "r", "c", "1e3"] => Ok(int(0)),
            ["HINCRBYFLOAT", "r", "c", "0"] => Ok(bulk("1000")),
            ["HGET", "r", "c"] => Ok(bulk("1000")),
            ["HINCRBYFLOAT", "r", "zero", "0"] => Ok(bulk("0")),
            ["HGET", "r", "zero"] => Ok(bulk("0")),
            // Increments that cancel out leave the canonical value.
            ["HSET", "r", "k", "2.50"] => Ok(int(1)),
            ["HINCRBYFLOAT", "r", "k", "1"] => Ok(bulk("3.5")),
            ["HINCRBYFLOAT", "r", "k", "-1"] => Ok(bulk("2.5")),
            ["HGET", "r", "k"] => Ok(bulk("2.5")),
            ["HINCRBYFLOAT", "r", "m", "1.5"] => Ok(bulk("1.5")),
            ["HINCRBYFLOAT", "r", "m", "-1.5"] => Ok(bulk("0")),
            ["HGET", "r", "m"] => Ok(bulk("0")),
            ["HEXISTS", "r", "m"] => Ok(int(1)),
            // Values that are no floats (hash.tcl: spaces, a NUL inside).
            ["HSET", "h", "s", " 11"] => Ok(int(1)),
            ["HINCRBYFLOAT", "h", "s", "1"] => Err("ERR hash value is not a float"),
            ["HSET", "h", "s", "11 "] => Ok(int(0)),
            ["HINCRBYFLOAT", "h", "s", "1"] => Err("ERR hash value is not a float"),
            ["HSET", "h", "s", "abc"] => Ok(int(0)),
            ["HINCRBYFLOAT", "h", "s", "1"] => Err("ERR hash value is not a float"),
            ["HSET", "h", "s", ""] => Ok(int(0)),
            ["HINCRBYFLOAT", "h", "s", "1"] => Err("ERR hash value is not a float"),
            ["HSET", "h", "s", "1\x002"] => Ok(int(0)),
            ["HINCRBYFLOAT", "h", "s", "1"] => Err("ERR hash value is not a float"),
            ["HSET", "h", "s", "inf"] => Ok(int(0)),
            ["HINCRBYFLOAT", "h", "s", "1"] => Err("ERR increment would produce NaN or Infinity"),
            ["HGET", "h", "s"] => Ok(bulk("inf")),
            // Bad increments.
            ["HINCRBYFLOAT", "h", "f", "abc"] => Err("ERR value is not a valid float"),
            ["HINCRBYFLOAT", "h", "f", ""] => Err("ERR value is not a valid float"),
            ["HINCRBYFLOAT", "h", "f", " 1"] => Err("ERR value is not a valid float"),
            ["HINCRBYFLOAT", "h", "f", "1 "] => Err("ERR value is not a valid float"),
            ["HINCRBYFLOAT", "h", "f", "nan"] => Err("ERR value is not a valid float"),
            ["HINCRBYFLOAT", "h", "f", "+inf"] => Err("ERR value is NaN or Infinity"),
            ["HINCRBYFLOAT", "h", "f", "-inf"] => Err("ERR value is NaN or Infinity"),
            ["HGET", "h", "f"] => Ok(bulk("102.5")),
            // A refused increment creates nothing (hash.tcl).
            ["HINCRBYFLOAT", "hfoo", "field", "+inf"] => Err("ERR value is NaN or Infinity"),
            ["EXISTS", "hfoo"] => Ok(int(0)),
            ["HINCRBY", "hfoo", "field", "x"] => Err("ERR value is not an integer or out of range"),
            ["EXISTS", "hfoo"] => Ok(int(0)),
        },
    )
    .await;
    q(con, &["FLUSHALL"]).await;
}

/// hash.tcl's "big hash": enough fields that Redis uses a hash table.
async fn big_hash(con: &mut Con) {
    let model: HashMap<String, String> = (0..1000)
        .map(|i| (format!("field:{i}"), format!("value:{}", i * 7)))
        .collect();
    hset(con, "big", model.clone()).await;
    assert_eq!(int_of(con, &["HLEN", "big"]).await, 1000);
    let mut want: Vec<(String, String)> = model.clone().into_iter().collect();
    want.sort();
    assert_eq!(sorted_pairs(&q(con, &["HGETALL", "big"]).await), want);
    let mut keys: Vec<String> = model.keys().cloned().collect();
    keys.sort();
    assert_eq!(sorted_texts(&q(con, &["HKEYS", "big"]).await), keys);
    let mut vals: Vec<String> = model.values().cloned().collect();
    vals.sort();
    assert_eq!(sorted_texts(&q(con, &["HVALS", "big"]).await), vals);
    for i in [0, 1, 499, 999] {
        let f = format!("field:{i}");
        assert_eq!(q(con, &["HGET", "big", &f]).await, bulk(&model[&f]));
        assert_eq!(
            int_of(con, &["HSTRLEN", "big", &f]).await,
            model[&f].len() as i64
        );
    }
    let got = q(con, &["HMGET", "big", "field:3", "nope", "field:998"]).await;
    assert_eq!(
        got,
        array(vec![
            bulk(&model["field:3"]),
            nil(),
            bulk(&model["field:998"])
        ])
    );
    // Half deleted in one command; the rest stays whole.
    let mut c = redis::cmd("HDEL");
    c.arg("big");
    for i in (0..1000).step_by(2) {
        c.arg(format!("field:{i}"));
    }
    c.arg("nope");
    assert_eq!(reply(con, &c).await, Ok(int(500)));
    assert_eq!(int_of(con, &["HLEN", "big"]).await, 500);
    let odd = |k: &str| {
        k.trim_start_matches("field:")
            .parse::<u32>()
            .is_ok_and(|i| i % 2 == 1)
    };
    let left: Vec<(String, String)> = want.into_iter().filter(|(k, _)| odd(k)).collect();
    assert_eq!(sorted_pairs(&q(con, &["HGETALL", "big"]).await), left);
    q(con, &["FLUSHALL"]).await;
}

async fn hrandfield(con: &mut Con) {
    table(con, rows! {
        ["HRANDFIELD", "missing"] => Ok(nil()),
        ["HRANDFIELD", "missing", "5"] => Ok(array(vec![])),
        ["HRANDFIELD", "missing", "-5", "WITHVALUES"] => Ok(array(vec![])),
        ["HRANDFIELD", "missing", "0"] => Ok(array(vec![])),
        ["HRANDFIELD", "missing", "x"] => Err("ERR value is not an integer or out of range"),
        ["HRANDFIELD", "missing", "1", "FOO"] => Err("ERR syntax error"),
        ["HSET", "one", "a", "1"] => Ok(int(1)),
        ["HRANDFIELD", "one"] => Ok(bulk("a")),
        ["HRANDFIELD", "one", "0"] => Ok(array(vec![])),
        ["HRANDFIELD", "one", "0", "WITHVALUES"] => Ok(array(vec![])),
        ["HRANDFIELD", "one", "1"] => Ok(array(vec![bulk("a")])),
        ["HRANDFIELD", "one", "5"] => Ok(array(vec![bulk("a")])),
        ["HRANDFIELD", "one", "5", "withvalues"] => Ok(array(vec![bulk("a"), bulk("1")])),
        ["HRANDFIELD", "one", "-3"] => Ok(array(vec![bulk("a"), bulk("a"), bulk("a")])),
        ["HRANDFIELD", "one", "-2", "WITHVALUES"] => Ok(array(vec![bulk("a"), bulk("1"), bulk("a"), bulk("1")])),
        ["HRANDFIELD", "one", "9223372036854775807"] => Ok(array(vec![bulk("a")])),
        ["HRANDFIELD", "one", "4611686018427387903", "WITHVALUES"] => Ok(array(vec![bulk("a"), bulk("1")])),
        // Count limits (hash.tcl's "count overflow").
        ["HRANDFIELD", "one", "-9223372036854770000", "WITHVALUES"] => Err("ERR value is out of range"),
        ["HRANDFIELD", "one", "-9223372036854775808", "WITHVALUES"] => Err("ERR value is out of range, \
            value must between -9223372036854775807 and 9223372036854775807"),
        ["HRANDFIELD", "one", "-9223372036854775808"] => Err("ERR value is out of range, \
            value must between -9223372036854775807 and 9223372036854775807"),
        ["HRANDFIELD", "one", "4611686018427387904", "WITHVALUES"] => Err("ERR value is out of range"),
        ["HRANDFIELD", "one", "9223372036854775808"] => Err("ERR value is not an integer or out of range"),
        ["HRANDFIELD", "one", "1.5"] => Err("ERR value is not an integer or out of range"),
        ["HRANDFIELD", "one", "1", "WITHVALUES", "x"] => Err("ERR syntax error"),
        ["HRANDFIELD", "one", "1", "x"] => Err("ERR syntax error"),
        ["HLEN", "one"] => Ok(int(1)),
    })
    .await;

    for n in [10usize, 300] {
        let model: HashMap<String, String> =
            (0..n).map(|i| (format!("f{i}"), format!("v{i}"))).collect();
        q(con, &["DEL", "h"]).await;
        hset(con, "h", model.clone()).await;
        let one = text(&q(con, &["HRANDFIELD", "h"]).await);
        assert!(model.contains_key(&one));
        // Positive counts: distinct fields, all of them from the size on
        // (sizes around the thresholds where Redis copies or samples).
        let counts = [
            1,
            2,
            3,
            n / 3,
            n / 3 + 1,
            n / 2,
            n - 2,
            n - 1,
            n,
            n + 1,
            2 * n,
        ];
        for count in counts {
            for with_values in [false, true] {
                let mut args = vec!["HRANDFIELD", "h"];
                let c = count.to_string();
                args.push(&c);
                if with_values {
                    args.push("WITHVALUES");
                }
                let got = texts(&q(con, &args).await);
                let fields: Vec<&String> = if with_values {
                    for pair in got.chunks(2) {
                        assert_eq!(model[&pair[0]], pair[1], "value of {}", pair[0]);
                    }
                    got.iter().step_by(2).collect()
                } else {
                    got.iter().collect()
                };
                assert_eq!(fields.len(), count.min(n), "HRANDFIELD {count} of {n}");
                let distinct: HashSet<&String> = fields.iter().copied().collect();
                assert_eq!(distinct.len(), fields.len(), "HRANDFIELD {count}: repeats");
                assert!(fields.iter().all(|f| model.contains_key(*f)));
            }
        }
        // Negative counts: that many draws, repeats allowed.
        for count in [1, 20, n, 1001] {
            let got = texts(&q(con, &["HRANDFIELD", "h", &format!("-{count}")]).await);
            assert_eq!(got.len(), count);
            assert!(got.iter().all(|f| model.contains_key(f)));
            let got = texts(
                &q(
                    con,
                    &["HRANDFIELD", "h", &format!("-{count}"), "WITHVALUES"],
                )
                .await,
            );
            assert_eq!(got.len(), 2 * count);
            for pair in got.chunks(2) {
                assert_eq!(model[&pair[0]], pair[1]);
            }
        }
        // Every field is drawn, roughly evenly.
        let mut histogram: HashMap<String, usize> = HashMap::new();
        let draws = 100 * n;
        for _ in 0..draws / 1000 {
            for f in texts(&q(con, &["HRANDFIELD", "h", "-1000"]).await) {
                *histogram.entry(f).or_default() += 1;
            }
        }
        assert_eq!(histogram.len(), n, "every field drawn");
        assert!(
            histogram.values().all(|&c| c > 40 && c < 200),
            "skewed draw {histogram:?}"
        );
        // Small positive counts reach every field too (200 draws of a
        // tenth each miss one of 300 fields with odds of about 1e-6).
        let small = (n / 10).max(3).to_string();
        let mut seen: HashSet<String> = HashSet::new();
        for _ in 0..200 {
            seen.extend(texts(&q(con, &["HRANDFIELD", "h", &small]).await));
            if seen.len() == n {
                break;
            }
        }
        assert_eq!(seen.len(), n, "HRANDFIELD {small} reaches every field");
        assert_eq!(int_of(con, &["HLEN", "h"]).await, n as i64, "reads only");
    }
    q(con, &["FLUSHALL"]).await;
}

/// Every (field, value) a full HSCAN returns, running `between` after
/// each step.
async fn full_hscan(
    con: &mut Con,
    key: &str,
    options: &[&str],
    mut between: impl AsyncFnMut(&mut Con, usize),
) -> Vec<(String, String)> {
    let mut cursor = "0".to_owned();
    let mut seen = Vec::new();
    for round in 0.. {
        assert!(round < 100_000, "HSCAN does not terminate");
        let mut args = vec!["HSCAN", key, &cursor];
        args.extend_from_slice(options);
        let v = q(con, &args).await;
        let Value::Array(parts) = &v else {
            panic!("HSCAN reply {v:?}")
        };
        assert_eq!(parts.len(), 2, "HSCAN reply {v:?}");
        // The cursor is a bulk string, not an integer.
        assert!(matches!(parts[0], Value::BulkString(_)), "{v:?}");
        let next = text(&parts[0]);
        seen.extend(pairs(&parts[1]).into_iter().map(|(k, v)| (k, text(&v))));
        between(con, round).await;
        if next == "0" {
            break;
        }
        cursor = next;
    }
    seen
}

async fn hscan(con: &mut Con) {
    let empty = || Ok(array(vec![bulk("0"), array(vec![])]));
    table(
        con,
        rows! {
            ["HSCAN", "missing", "0"] => empty(),
            // Options are read only once the hash is found.
            ["HSCAN", "missing", "0", "COUNT", "0"] => empty(),
            ["HSCAN", "missing", "0", "FOO"] => empty(),
            ["HSCAN", "missing", "abc"] => Err("ERR invalid cursor"),
            ["HSET", "h", "a", "1", "b", "2", "c", "3"] => Ok(int(3)),
            ["HSCAN", "h", "abc"] => Err("ERR invalid cursor"),
            ["HSCAN", "h", "1x"] => Err("ERR invalid cursor"),
            ["HSCAN", "h", " 1"] => Err("ERR invalid cursor"),
            ["HSCAN", "h", "-"] => Err("ERR invalid cursor"),
            ["HSCAN", "h", "18446744073709551616"] => Err("ERR invalid cursor"),
            ["HSCAN", "h", "0", "COUNT", "0"] => Err("ERR syntax error"),
            ["HSCAN", "h", "0", "COUNT", "-1"] => Err("ERR syntax error"),
            ["HSCAN", "h", "0", "COUNT", "x"] => Err("ERR value is not an integer or out of range"),
            ["HSCAN", "h", "0", "COUNT"] => Err("ERR syntax error"),
            ["HSCAN", "h", "0", "MATCH"] => Err("ERR syntax error"),
            ["HSCAN", "h", "0", "TYPE", "hash"] => Err("ERR syntax error"),
            // Redis 7.0 has no NOVALUES.
            ["HSCAN", "h", "0", "NOVALUES"] => Err("ERR syntax error"),
            ["HSCAN", "h", "0", "MATCH", "a*", "COUNT", "100"] =>
                Ok(array(vec![bulk("0"), array(vec![bulk("a"), bulk("1")])])),
            ["HSCAN", "h", "0", "MATCH", "zz", "COUNT", "100"] => empty(),
        },
    )
    .await;
    // Cursors parse like strtoul: a sign is taken, "" is 0.
    for cursor in ["+0", "", "-1", "18446744073709551615"] {
        let v = q(con, &["HSCAN", "h", cursor, "COUNT", "100"]).await;
        assert!(
            matches!(&v, Value::Array(p) if p.len() == 2),
            "{cursor:?}: {v:?}"
        );
    }
    let v = q(con, &["HSCAN", "h", "0", "match", "[ab]", "count", "100"]).await;
    let Value::Array(parts) = &v else {
        panic!("HSCAN reply {v:?}")
    };
    assert_eq!(sorted_pairs(&parts[1]), owned(&[("a", "1"), ("b", "2")]));

    for n in [100usize, 1000] {
        let wanted: HashSet<(String, String)> = (0..n)
            .map(|i| (format!("f:{i}"), format!("v:{i}")))
            .collect();
        q(con, &["DEL", "big"]).await;
        hset(con, "big", wanted.iter().cloned()).await;
        for count in [
            &[][..],
            &["COUNT", "1"],
            &["COUNT", "37"],
            &["COUNT", "5000"],
        ] {
            let seen: HashSet<(String, String)> = full_hscan(con, "big", count, async |_, _| {})
                .await
                .into_iter()
                .collect();
            assert_eq!(seen, wanted, "{n} {count:?}");
        }
        // Fields present for the whole scan are returned while others
        // come and go.
        let seen: HashSet<(String, String)> =
            full_hscan(con, "big", &["COUNT", "20"], async |con, round| {
                for j in 0..10 {
                    q(con, &["HSET", "big", &format!("churn:{round}:{j}"), "x"]).await;
                }
                if round > 0 {
                    for j in 0..10 {
                        q(con, &["HDEL", "big", &format!("churn:{}:{j}", round - 1)]).await;
                    }
                }
            })
            .await
            .into_iter()
            .collect();
        let missing: Vec<&(String, String)> = wanted.difference(&seen).collect();
        assert!(missing.is_empty(), "{n}: missed {missing:?}");
        let matched: HashSet<(String, String)> = full_hscan(
            con,
            "big",
            &["MATCH", "f:*1", "COUNT", "50"],
            async |_, _| {},
        )
        .await
        .into_iter()
        .collect();
        let want: HashSet<(String, String)> = wanted
            .iter()
            .filter(|(f, _)| f.ends_with('1'))
            .cloned()
            .collect();
        assert_eq!(matched, want, "{n} MATCH");
    }
    q(con, &["FLUSHALL"]).await;
}

/// RESP3: HGETALL is a map, HRANDFIELD WITHVALUES an array of pairs, the
/// rest arrays, as in Redis 7.0.
async fn resp3(t: &Target) {
    let mut con = t.con().await;
    q(&mut con, &["HELLO", "3"]).await;
    q(&mut con, &["HSET", "h", "a", "1", "b", "2", "c", "3"]).await;
    let all = q(&mut con, &["HGETALL", "h"]).await;
    assert!(matches!(&all, Value::Map(kv) if kv.len() == 3), "{all:?}");
    assert_eq!(
        sorted_pairs(&all),
        owned(&[("a", "1"), ("b", "2"), ("c", "3")])
    );
    let none = q(&mut con, &["HGETALL", "missing"]).await;
    assert!(matches!(&none, Value::Map(kv) if kv.is_empty()), "{none:?}");
    for (count, n) in [("2", 2), ("-5", 5), ("10", 3)] {
        let v = q(&mut con, &["HRANDFIELD", "h", count, "WITHVALUES"]).await;
        let Value::Array(items) = &v else {
            panic!("HRANDFIELD WITHVALUES in RESP3: {v:?}")
        };
        assert_eq!(items.len(), n, "{v:?}");
        for item in items {
            let Value::Array(pair) = item else {
                panic!("a pair: {item:?}")
            };
            let want = match text(&pair[0]).as_str() {
                "a" => "1",
                "b" => "2",
                "c" => "3",
                other => panic!("field {other}"),
            };
            assert_eq!(pair[1..], [bulk(want)]);
        }
    }
    // Without values, and for the other commands: flat arrays.
    for (args, n) in [
        (&["HRANDFIELD", "h", "2"][..], 2),
        (&["HRANDFIELD", "h", "-4"], 4),
        (&["HRANDFIELD", "missing", "2"], 0),
        (&["HKEYS", "h"], 3),
        (&["HVALS", "h"], 3),
        (&["HMGET", "h", "a", "z"], 2),
    ] {
        let v = q(&mut con, args).await;
        assert!(
            matches!(&v, Value::Array(items) if items.len() == n
                && items.iter().all(|i| matches!(i, Value::BulkString(_) | Value::Nil))),
            "{args:?} in RESP3: {v:?}"
        );
    }
    let scan = q(&mut con, &["HSCAN", "h", "0"]).await;
    let Value::Array(parts) = &scan else {
        panic!("HSCAN in RESP3: {scan:?}")
    };
    assert_eq!(parts[0], bulk("0"));
    assert!(
        matches!(&parts[1], Value::Array(flat) if flat.len() == 6),
        "{scan:?}"
    );
    assert_eq!(q(&mut con, &["HMGET", "h", "z"]).await, array(vec![nil()]));
    assert_eq!(q(&mut con, &["HRANDFIELD", "missing"]).await, nil());
    assert_eq!(q(&mut con, &["HGET", "h", "z"]).await, nil());
    q(&mut con, &["FLUSHALL"]).await;
}
