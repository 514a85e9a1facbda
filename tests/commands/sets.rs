//! The sets family's conformance checks (see tests/commands.rs). Replies
//! whose order Redis leaves unspecified are compared sorted; random ones
//! (SPOP, SRANDMEMBER, SSCAN's order) by their properties.

use std::collections::{HashMap, HashSet};

use crate::*;

pub async fn sets(t: &Target) {
    let mut con = t.con().await;
    basics(&mut con).await;
    errors(&mut con).await;
    algebra(&mut con).await;
    stores(&mut con).await;
    sintercard(&mut con).await;
    smove(&mut con).await;
    spop_srandmember(&mut con).await;
    sscan(&mut con).await;
    resp3(t).await;
}

fn strings(items: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = items.iter().map(|s| (*s).to_owned()).collect();
    out.sort();
    out
}

async fn members(con: &mut Con, args: &[&str]) -> Vec<String> {
    sorted_texts(&q(con, args).await)
}

/// Texts of an array reply, in the order sent.
fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().map(text).collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

async fn sadd(con: &mut Con, key: &str, items: impl IntoIterator<Item = String>) {
    let mut c = redis::cmd("SADD");
    c.arg(key);
    for m in items {
        c.arg(m);
    }
    reply(con, &c).await.expect("SADD");
}

async fn basics(con: &mut Con) {
    table(
        con,
        rows! {
            ["SADD", "s", "a", "b", "c"] => Ok(int(3)),
            ["SADD", "s", "a", "d", "d"] => Ok(int(1)),
            ["SADD", "s", "a"] => Ok(int(0)),
            ["SCARD", "s"] => Ok(int(4)),
            ["SCARD", "missing"] => Ok(int(0)),
            ["SISMEMBER", "s", "a"] => Ok(int(1)),
            ["SISMEMBER", "s", "z"] => Ok(int(0)),
            ["SISMEMBER", "missing", "a"] => Ok(int(0)),
            ["SMISMEMBER", "s", "a", "z", "d"] => Ok(array(vec![int(1), int(0), int(1)])),
            ["SMISMEMBER", "missing", "a"] => Ok(array(vec![int(0)])),
            ["TYPE", "s"] => Ok(status("set")),
            // Integers are members like any other string: "1" is not "01".
            ["SADD", "ints", "1", "2", "3", "01", "-5"] => Ok(int(5)),
            ["SISMEMBER", "ints", "01"] => Ok(int(1)),
            ["SISMEMBER", "ints", "1"] => Ok(int(1)),
            ["SISMEMBER", "ints", "001"] => Ok(int(0)),
            ["SADD", "ints", "18446744073709551616"] => Ok(int(1)),
            ["SADD", "e", ""] => Ok(int(1)),
            ["SISMEMBER", "e", ""] => Ok(int(1)),
            ["SREM", "s", "a", "zz"] => Ok(int(1)),
            ["SREM", "s", "a"] => Ok(int(0)),
            ["SREM", "missing", "a"] => Ok(int(0)),
            ["SCARD", "s"] => Ok(int(3)),
            // Removing the last members deletes the key.
            ["SREM", "s", "b", "c", "d", "e", "f", "g"] => Ok(int(3)),
            ["EXISTS", "s"] => Ok(int(0)),
            ["TYPE", "s"] => Ok(status("none")),
            ["SREM", "e", ""] => Ok(int(1)),
            ["EXISTS", "e"] => Ok(int(0)),
        },
    )
    .await;
    assert_eq!(
        members(con, &["SMEMBERS", "ints"]).await,
        strings(&["-5", "01", "1", "18446744073709551616", "2", "3"])
    );
    assert_eq!(q(con, &["SMEMBERS", "missing"]).await, array(vec![]));

    // Binary-safe members.
    let mut c = redis::cmd("SADD");
    c.arg("bin").arg(&b"a\0b\r\n"[..]).arg(&b"\xff"[..]);
    assert_eq!(reply(con, &c).await, Ok(int(2)));
    let mut c = redis::cmd("SISMEMBER");
    c.arg("bin").arg(&b"a\0b\r\n"[..]);
    assert_eq!(reply(con, &c).await, Ok(int(1)));

    // A set emptied and created again starts without the old TTL, as a
    // deleted key does.
    table(
        con,
        rows! {
            ["SADD", "ttl1", "a", "b"] => Ok(int(2)),
            ["EXPIRE", "ttl1", "100"] => Ok(int(1)),
            ["TTL", "ttl1"] => Ok(int(100)),
            ["SREM", "ttl1", "a", "b"] => Ok(int(2)),
            ["SADD", "ttl1", "c"] => Ok(int(1)),
            ["TTL", "ttl1"] => Ok(int(-1)),
            ["SADD", "ttl2", "a"] => Ok(int(1)),
            ["EXPIRE", "ttl2", "100"] => Ok(int(1)),
            ["SPOP", "ttl2"] => Ok(bulk("a")),
            ["SADD", "ttl2", "c"] => Ok(int(1)),
            ["TTL", "ttl2"] => Ok(int(-1)),
            ["SADD", "ttl3", "a"] => Ok(int(1)),
            ["EXPIRE", "ttl3", "100"] => Ok(int(1)),
            ["DEL", "ttl3"] => Ok(int(1)),
            ["SADD", "ttl3", "c"] => Ok(int(1)),
            ["TTL", "ttl3"] => Ok(int(-1)),
            // A TTL on a live set stays through SADD and SREM.
            ["SADD", "ttl4", "a", "b"] => Ok(int(2)),
            ["EXPIRE", "ttl4", "100"] => Ok(int(1)),
            ["SADD", "ttl4", "c"] => Ok(int(1)),
            ["SREM", "ttl4", "a"] => Ok(int(1)),
            ["TTL", "ttl4"] => Ok(int(100)),
        },
    )
    .await;
    q(con, &["FLUSHALL"]).await;
}

const WRONG: Expect = Err("WRONGTYPE Operation against a key holding the wrong kind of value");

fn arity(name: &'static str) -> Expect {
    Err(match name {
        "sadd" => "ERR wrong number of arguments for 'sadd' command",
        "srem" => "ERR wrong number of arguments for 'srem' command",
        "smembers" => "ERR wrong number of arguments for 'smembers' command",
        "sismember" => "ERR wrong number of arguments for 'sismember' command",
        "smismember" => "ERR wrong number of arguments for 'smismember' command",
        "scard" => "ERR wrong number of arguments for 'scard' command",
        "spop" => "ERR wrong number of arguments for 'spop' command",
        "srandmember" => "ERR wrong number of arguments for 'srandmember' command",
        "smove" => "ERR wrong number of arguments for 'smove' command",
        "sinter" => "ERR wrong number of arguments for 'sinter' command",
        "sintercard" => "ERR wrong number of arguments for 'sintercard' command",
        "sinterstore" => "ERR wrong number of arguments for 'sinterstore' command",
        "sunion" => "ERR wrong number of arguments for 'sunion' command",
        "sunionstore" => "ERR wrong number of arguments for 'sunionstore' command",
        "sdiff" => "ERR wrong number of arguments for 'sdiff' command",
        "sdiffstore" => "ERR wrong number of arguments for 'sdiffstore' command",
        "sscan" => "ERR wrong number of arguments for 'sscan' command",
        _ => unreachable!(),
    })
}

async fn errors(con: &mut Con) {
    table(con, rows! {
        ["SADD"] => arity("sadd"),
        ["SADD", "s"] => arity("sadd"),
        ["SREM", "s"] => arity("srem"),
        ["SMEMBERS"] => arity("smembers"),
        ["SMEMBERS", "a", "b"] => arity("smembers"),
        ["SISMEMBER", "s"] => arity("sismember"),
        ["SISMEMBER", "s", "a", "b"] => arity("sismember"),
        ["SMISMEMBER", "s"] => arity("smismember"),
        ["SCARD"] => arity("scard"),
        ["SCARD", "a", "b"] => arity("scard"),
        ["SPOP"] => arity("spop"),
        ["SRANDMEMBER"] => arity("srandmember"),
        ["SMOVE", "a", "b"] => arity("smove"),
        ["SMOVE", "a", "b", "c", "d"] => arity("smove"),
        ["SINTER"] => arity("sinter"),
        ["SINTERCARD"] => arity("sintercard"),
        ["SINTERCARD", "1"] => arity("sintercard"),
        ["SINTERSTORE", "d"] => arity("sinterstore"),
        ["SUNION"] => arity("sunion"),
        ["SUNIONSTORE", "d"] => arity("sunionstore"),
        ["SDIFF"] => arity("sdiff"),
        ["SDIFFSTORE", "d"] => arity("sdiffstore"),
        ["SSCAN", "s"] => arity("sscan"),
        // Every command refuses a key of another type, and changes nothing.
        ["SET", "str", "x"] => Ok(okay()),
        ["SADD", "set", "a", "b", "c"] => Ok(int(3)),
        ["SADD", "str", "a"] => WRONG,
        ["SREM", "str", "a"] => WRONG,
        ["SMEMBERS", "str"] => WRONG,
        ["SISMEMBER", "str", "a"] => WRONG,
        ["SMISMEMBER", "str", "a"] => WRONG,
        ["SCARD", "str"] => WRONG,
        ["SPOP", "str"] => WRONG,
        ["SPOP", "str", "0"] => WRONG,
        ["SPOP", "str", "2"] => WRONG,
        ["SRANDMEMBER", "str"] => WRONG,
        ["SRANDMEMBER", "str", "0"] => WRONG,
        ["SRANDMEMBER", "str", "-2"] => WRONG,
        ["SINTER", "str"] => WRONG,
        ["SINTER", "set", "str"] => WRONG,
        // Types are checked even after a missing key.
        ["SINTER", "missing", "str"] => WRONG,
        ["SINTERCARD", "1", "str"] => WRONG,
        ["SINTERCARD", "2", "set", "str"] => WRONG,
        ["SINTERCARD", "2", "str", "missing"] => WRONG,
        ["SINTERCARD", "2", "missing", "str"] => WRONG,
        ["SINTERSTORE", "d", "set", "str"] => WRONG,
        ["SINTERSTORE", "d", "missing", "str"] => WRONG,
        ["SUNION", "set", "str"] => WRONG,
        ["SUNION", "missing", "str"] => WRONG,
        ["SUNIONSTORE", "d", "set", "str"] => WRONG,
        ["SDIFF", "str", "set"] => WRONG,
        ["SDIFF", "set", "missing", "str"] => WRONG,
        ["SDIFF", "missing", "str"] => WRONG,
        ["SDIFFSTORE", "d", "set", "str"] => WRONG,
        ["SSCAN", "str", "0"] => WRONG,
        ["EXISTS", "d"] => Ok(int(0)),
        ["GET", "str"] => Ok(bulk("x")),
        ["SCARD", "set"] => Ok(int(3)),
        // Count arguments.
        ["SPOP", "set", "-1"] => Err("ERR value is out of range, must be positive"),
        ["SPOP", "set", "abc"] => Err("ERR value is out of range, must be positive"),
        ["SPOP", "missing", "-1"] => Err("ERR value is out of range, must be positive"),
        ["SPOP", "str", "-1"] => Err("ERR value is out of range, must be positive"),
        ["SPOP", "set", "1", "2"] => Err("ERR syntax error"),
        ["SRANDMEMBER", "set", "abc"] => Err("ERR value is not an integer or out of range"),
        ["SRANDMEMBER", "set", "1.5"] => Err("ERR value is not an integer or out of range"),
        ["SRANDMEMBER", "set", "-9223372036854775808"] => Err("ERR value is out of range, \
            value must between -9223372036854775807 and 9223372036854775807"),
        ["SRANDMEMBER", "set", "9223372036854775808"] => Err("ERR value is not an integer or out of range"),
        ["SRANDMEMBER", "set", "1", "2"] => Err("ERR syntax error"),
        ["SCARD", "set"] => Ok(int(3)),
    })
    .await;
    q(con, &["FLUSHALL"]).await;
}

/// set.tcl's fixtures: set1 = 0..200, set2 = 195..395, set3 = {199, 195,
/// 1000, 2000}, set4 = 5..200, set5 = {0}, each with `extra` added.
async fn fixtures(con: &mut Con, extra: &str) -> Vec<HashSet<String>> {
    let n = |r: std::ops::Range<i32>| r.map(|i| i.to_string()).collect::<HashSet<_>>();
    let mut sets = vec![
        n(0..200),
        n(195..395),
        ["199", "195", "1000", "2000"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        n(5..200),
        n(0..1),
    ];
    for (i, s) in sets.iter_mut().enumerate() {
        s.insert(extra.to_owned());
        q(con, &["DEL", &format!("set{}", i + 1)]).await;
        sadd(con, &format!("set{}", i + 1), s.iter().cloned()).await;
    }
    sets
}

fn sorted(s: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = s.into_iter().collect();
    v.sort();
    v
}

async fn algebra(con: &mut Con) {
    // "200" keeps them integer sets in Redis, "foo" makes them hashtables.
    for extra in ["200", "foo"] {
        let s = fixtures(con, extra).await;
        let inter = |a: &HashSet<String>, b: &HashSet<String>| -> HashSet<String> {
            a.intersection(b).cloned().collect()
        };
        let want = sorted(inter(&s[0], &s[1]));
        assert_eq!(members(con, &["SINTER", "set1", "set2"]).await, want);
        let want3 = sorted(inter(&inter(&s[0], &s[1]), &s[2]));
        assert_eq!(
            members(con, &["SINTER", "set1", "set2", "set3"]).await,
            want3
        );
        let union = sorted(s[0].union(&s[1]).cloned());
        assert_eq!(members(con, &["SUNION", "set1", "set2"]).await, union);
        assert_eq!(
            members(con, &["SUNION", "set1", "set2", "missing"]).await,
            union
        );
        let diff = sorted(s[0].difference(&s[3]).cloned());
        assert_eq!(members(con, &["SDIFF", "set1", "set4"]).await, diff);
        let diff3: HashSet<String> = s[0].difference(&s[3]).cloned().collect();
        let diff3 = sorted(diff3.difference(&s[4]).cloned());
        assert_eq!(
            members(con, &["SDIFF", "set1", "set4", "set5"]).await,
            diff3
        );
        // Three times the same set.
        let one = sorted(s[0].iter().cloned());
        assert_eq!(members(con, &["SINTER", "set1", "set1", "set1"]).await, one);
        assert_eq!(members(con, &["SUNION", "set1", "set1", "set1"]).await, one);
        assert_eq!(
            q(con, &["SDIFF", "set1", "set1", "set1"]).await,
            array(vec![])
        );
    }
    table(
        con,
        rows! {
            ["SADD", "a", "1", "2", "3"] => Ok(int(3)),
            ["SINTER", "a", "missing"] => Ok(array(vec![])),
            ["SINTER", "missing", "a"] => Ok(array(vec![])),
            ["SDIFF", "missing", "a"] => Ok(array(vec![])),
            ["SUNION", "missing"] => Ok(array(vec![])),
            ["SUNION", "missing", "missing2"] => Ok(array(vec![])),
            ["SDIFF", "a", "a"] => Ok(array(vec![])),
            ["SINTER", "a", "a", "missing"] => Ok(array(vec![])),
        },
    )
    .await;
    assert_eq!(
        members(con, &["SDIFF", "a", "missing"]).await,
        strings(&["1", "2", "3"])
    );
    assert_eq!(
        members(con, &["SINTER", "a"]).await,
        strings(&["1", "2", "3"])
    );

    // SDIFF fuzzing, as set.tcl does: random sets against a model.
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for _ in 0..20 {
        let mut model: Vec<HashSet<String>> = Vec::new();
        let mut keys = Vec::new();
        for j in 0..1 + next(4) {
            let key = format!("fuzz{j}");
            q(con, &["DEL", &key]).await;
            let items: HashSet<String> = (0..next(30)).map(|_| next(40).to_string()).collect();
            if !items.is_empty() {
                sadd(con, &key, items.iter().cloned()).await;
            }
            model.push(items);
            keys.push(key);
        }
        let mut want = model[0].clone();
        for other in &model[1..] {
            want.retain(|x| !other.contains(x));
        }
        let mut args = vec!["SDIFF"];
        args.extend(keys.iter().map(String::as_str));
        assert_eq!(members(con, &args).await, sorted(want), "{model:?}");
    }
    q(con, &["FLUSHALL"]).await;
}

async fn stores(con: &mut Con) {
    fixtures(con, "foo").await;
    table(
        con,
        rows! {
            ["SINTERSTORE", "dst", "set1", "set2"] => Ok(int(6)),
            ["SUNIONSTORE", "dst", "set1", "set2"] => Ok(int(396)),
            ["SCARD", "dst"] => Ok(int(396)),
            ["SDIFFSTORE", "dst", "set1", "set4", "set5"] => Ok(int(4)),
            ["SCARD", "dst"] => Ok(int(4)),
            ["SINTERSTORE", "dst", "set1", "set2", "set3"] => Ok(int(3)),
            // An empty result deletes the destination.
            ["SINTERSTORE", "dst", "set1", "missing"] => Ok(int(0)),
            ["EXISTS", "dst"] => Ok(int(0)),
            ["SADD", "dst", "x"] => Ok(int(1)),
            ["SUNIONSTORE", "dst", "missing", "missing2"] => Ok(int(0)),
            ["EXISTS", "dst"] => Ok(int(0)),
            ["SADD", "dst", "x"] => Ok(int(1)),
            ["SDIFFSTORE", "dst", "set1", "set1"] => Ok(int(0)),
            ["EXISTS", "dst"] => Ok(int(0)),
            ["SDIFFSTORE", "dst", "missing", "set1"] => Ok(int(0)),
            ["SINTERSTORE", "dst", "missing"] => Ok(int(0)),
            ["EXISTS", "dst"] => Ok(int(0)),
            // A destination of another type is overwritten, and loses its TTL.
            ["SET", "str", "x", "EX", "100"] => Ok(okay()),
            ["SINTERSTORE", "str", "set3", "set3"] => Ok(int(5)),
            ["TYPE", "str"] => Ok(status("set")),
            ["TTL", "str"] => Ok(int(-1)),
            ["SET", "str", "x"] => Ok(okay()),
            ["SINTERSTORE", "str", "set3", "missing"] => Ok(int(0)),
            ["EXISTS", "str"] => Ok(int(0)),
            ["SET", "str", "x"] => Ok(okay()),
            ["SUNIONSTORE", "str", "set5"] => Ok(int(2)),
            ["TYPE", "str"] => Ok(status("set")),
            ["SET", "str", "x"] => Ok(okay()),
            ["SDIFFSTORE", "str", "set5"] => Ok(int(2)),
            ["TYPE", "str"] => Ok(status("set")),
            ["SADD", "ttl", "old"] => Ok(int(1)),
            ["EXPIRE", "ttl", "100"] => Ok(int(1)),
            ["SUNIONSTORE", "ttl", "set5"] => Ok(int(2)),
            ["TTL", "ttl"] => Ok(int(-1)),
            ["SISMEMBER", "ttl", "old"] => Ok(int(0)),
            // A source that is also the destination is read first.
            ["SADD", "self", "a", "b", "c"] => Ok(int(3)),
            ["SADD", "other", "b", "c", "d"] => Ok(int(3)),
            ["SINTERSTORE", "self", "self", "other"] => Ok(int(2)),
            ["SUNIONSTORE", "self", "self", "other"] => Ok(int(3)),
            ["SDIFFSTORE", "self", "self", "other"] => Ok(int(0)),
            ["EXISTS", "self"] => Ok(int(0)),
            ["SADD", "self", "a", "b"] => Ok(int(2)),
            ["SUNIONSTORE", "self", "self"] => Ok(int(2)),
            // A refused store leaves the destination alone.
            ["SET", "s", "v"] => Ok(okay()),
            ["SUNIONSTORE", "self", "set1", "s"] => WRONG,
            ["SCARD", "self"] => Ok(int(2)),
        },
    )
    .await;
    assert_eq!(
        members(con, &["SMEMBERS", "str"]).await,
        strings(&["0", "foo"])
    );
    assert_eq!(
        members(con, &["SMEMBERS", "dst"]).await,
        Vec::<String>::new()
    );
    q(con, &["SINTERSTORE", "dst", "set1", "set2", "set3"]).await;
    assert_eq!(
        members(con, &["SMEMBERS", "dst"]).await,
        strings(&["195", "199", "foo"])
    );
    q(con, &["FLUSHALL"]).await;
}

async fn sintercard(con: &mut Con) {
    fixtures(con, "foo").await;
    table(con, rows! {
        ["SINTERCARD", "0", "set1"] => Err("ERR numkeys should be greater than 0"),
        ["SINTERCARD", "-1", "set1"] => Err("ERR numkeys should be greater than 0"),
        ["SINTERCARD", "a", "set1"] => Err("ERR numkeys should be greater than 0"),
        ["SINTERCARD", "9223372036854775808", "set1"] => Err("ERR numkeys should be greater than 0"),
        ["SINTERCARD", "2", "set1"] => Err("ERR Number of keys can't be greater than number of args"),
        ["SINTERCARD", "3", "set1", "set2"] => Err("ERR Number of keys can't be greater than number of args"),
        ["SINTERCARD", "1", "set1", "set2"] => Err("ERR syntax error"),
        ["SINTERCARD", "1", "set1", "bar_arg"] => Err("ERR syntax error"),
        ["SINTERCARD", "1", "set1", "LIMIT"] => Err("ERR syntax error"),
        ["SINTERCARD", "1", "set1", "LIMIT", "-1"] => Err("ERR LIMIT can't be negative"),
        ["SINTERCARD", "1", "set1", "LIMIT", "a"] => Err("ERR LIMIT can't be negative"),
        ["SINTERCARD", "1", "missing", "LIMIT", "-1"] => Err("ERR LIMIT can't be negative"),
        ["SINTERCARD", "1", "missing"] => Ok(int(0)),
        ["SINTERCARD", "1", "missing", "limit", "0"] => Ok(int(0)),
        ["SINTERCARD", "1", "missing", "LIMIT", "10"] => Ok(int(0)),
        ["SINTERCARD", "2", "set1", "missing"] => Ok(int(0)),
        ["SINTERCARD", "1", "set1"] => Ok(int(201)),
        ["SINTERCARD", "2", "set1", "set2"] => Ok(int(6)),
        ["SINTERCARD", "2", "set1", "set2", "LIMIT", "0"] => Ok(int(6)),
        ["SINTERCARD", "2", "set1", "set2", "LIMIT", "3"] => Ok(int(3)),
        ["SINTERCARD", "2", "set1", "set2", "LIMIT", "10"] => Ok(int(6)),
        ["SINTERCARD", "3", "set1", "set2", "set3"] => Ok(int(3)),
        ["SINTERCARD", "3", "set1", "set2", "set3", "LIMIT", "2"] => Ok(int(2)),
        // The last LIMIT counts.
        ["SINTERCARD", "1", "set1", "LIMIT", "1", "LIMIT", "5"] => Ok(int(5)),
        ["SINTERCARD", "2", "set1", "set1"] => Ok(int(201)),
    })
    .await;
    q(con, &["FLUSHALL"]).await;
}

async fn smove(con: &mut Con) {
    table(
        con,
        rows! {
            ["SADD", "src", "a", "b", "1"] => Ok(int(3)),
            ["SADD", "dst", "2", "3"] => Ok(int(2)),
            ["SET", "str", "x"] => Ok(okay()),
            ["SMOVE", "src", "dst", "a"] => Ok(int(1)),
            ["SMOVE", "src", "dst", "a"] => Ok(int(0)),
            ["SISMEMBER", "src", "a"] => Ok(int(0)),
            ["SISMEMBER", "dst", "a"] => Ok(int(1)),
            // Already in the destination: removed from the source only.
            ["SADD", "src", "2"] => Ok(int(1)),
            ["SMOVE", "src", "dst", "2"] => Ok(int(1)),
            ["SCARD", "src"] => Ok(int(2)),
            ["SCARD", "dst"] => Ok(int(3)),
            ["SMOVE", "missing", "dst", "a"] => Ok(int(0)),
            // A missing source answers 0 before the destination's type.
            ["SMOVE", "missing", "str", "a"] => Ok(int(0)),
            ["SMOVE", "str", "dst", "a"] => WRONG,
            ["SMOVE", "src", "str", "b"] => WRONG,
            ["SMOVE", "src", "str", "zz"] => WRONG,
            ["SISMEMBER", "src", "b"] => Ok(int(1)),
            ["SMOVE", "src", "src", "b"] => Ok(int(1)),
            ["SMOVE", "src", "src", "zz"] => Ok(int(0)),
            ["SCARD", "src"] => Ok(int(2)),
            ["SMOVE", "src", "new", "b"] => Ok(int(1)),
            ["SMEMBERS", "new"] => Ok(array(vec![bulk("b")])),
            // Moving the last member deletes the source.
            ["SMOVE", "src", "new", "1"] => Ok(int(1)),
            ["EXISTS", "src"] => Ok(int(0)),
            ["SCARD", "new"] => Ok(int(2)),
            ["EXPIRE", "new", "100"] => Ok(int(1)),
            ["SMOVE", "new", "dst", "b"] => Ok(int(1)),
            ["SMOVE", "new", "dst", "1"] => Ok(int(1)),
            ["SADD", "new", "c"] => Ok(int(1)),
            ["TTL", "new"] => Ok(int(-1)),
        },
    )
    .await;
    assert_eq!(
        members(con, &["SMEMBERS", "dst"]).await,
        strings(&["1", "2", "3", "a", "b"])
    );
    q(con, &["FLUSHALL"]).await;
}

async fn spop_srandmember(con: &mut Con) {
    table(
        con,
        rows! {
            ["SPOP", "missing"] => Ok(nil()),
            ["SPOP", "missing", "0"] => Ok(array(vec![])),
            ["SPOP", "missing", "3"] => Ok(array(vec![])),
            ["SRANDMEMBER", "missing"] => Ok(nil()),
            ["SRANDMEMBER", "missing", "3"] => Ok(array(vec![])),
            ["SRANDMEMBER", "missing", "-3"] => Ok(array(vec![])),
            ["SADD", "one", "x"] => Ok(int(1)),
            ["SRANDMEMBER", "one"] => Ok(bulk("x")),
            ["SRANDMEMBER", "one", "0"] => Ok(array(vec![])),
            ["SRANDMEMBER", "one", "5"] => Ok(array(vec![bulk("x")])),
            ["SRANDMEMBER", "one", "-3"] => Ok(array(vec![bulk("x"), bulk("x"), bulk("x")])),
            ["SRANDMEMBER", "one", "9223372036854775807"] => Ok(array(vec![bulk("x")])),
            ["SPOP", "one", "0"] => Ok(array(vec![])),
            ["SCARD", "one"] => Ok(int(1)),
            ["SPOP", "one"] => Ok(bulk("x")),
            ["EXISTS", "one"] => Ok(int(0)),
            ["SADD", "one", "y"] => Ok(int(1)),
            ["SPOP", "one", "1"] => Ok(array(vec![bulk("y")])),
            ["EXISTS", "one"] => Ok(int(0)),
        },
    )
    .await;

    for (kind, contents) in [
        ("intset", (0..50).map(|i| i.to_string()).collect::<Vec<_>>()),
        ("hashtable", (0..50).map(|i| format!("m{i}")).collect()),
    ] {
        let all: HashSet<String> = contents.iter().cloned().collect();
        q(con, &["DEL", "s"]).await;
        sadd(con, "s", contents.iter().cloned()).await;
        // SRANDMEMBER: distinct members for positive counts (all of them
        // from the size on), repeats allowed for negative ones.
        for count in [1, 2, 5, 10, 24, 25, 26, 40, 49, 50, 51, 100] {
            let got = texts(&q(con, &["SRANDMEMBER", "s", &count.to_string()]).await);
            assert_eq!(got.len(), count.min(50), "{kind} SRANDMEMBER {count}");
            let distinct: HashSet<String> = got.iter().cloned().collect();
            assert_eq!(
                distinct.len(),
                got.len(),
                "{kind} SRANDMEMBER {count} repeats"
            );
            assert!(distinct.is_subset(&all));
        }
        for count in [1, 10, 50, 100, 1000] {
            let got = texts(&q(con, &["SRANDMEMBER", "s", &format!("-{count}")]).await);
            assert_eq!(got.len(), count, "{kind} SRANDMEMBER -{count}");
            assert!(got.iter().all(|m| all.contains(m)));
        }
        let many = texts(&q(con, &["SRANDMEMBER", "s", "-1000"]).await);
        let distinct: HashSet<&String> = many.iter().collect();
        assert!(distinct.len() < many.len(), "negative counts repeat");
        // Each member is picked, roughly evenly.
        let mut histogram: HashMap<String, usize> = HashMap::new();
        for _ in 0..20 {
            for m in texts(&q(con, &["SRANDMEMBER", "s", "-500"]).await) {
                *histogram.entry(m).or_default() += 1;
            }
        }
        assert_eq!(histogram.len(), 50, "{kind}: every member drawn");
        assert!(
            histogram.values().all(|&n| n > 80 && n < 350),
            "{kind}: skewed draw {histogram:?}"
        );
        let picked = text(&q(con, &["SRANDMEMBER", "s"]).await);
        assert!(all.contains(&picked));
        assert_eq!(
            int_of(con, &["SCARD", "s"]).await,
            50,
            "SRANDMEMBER reads only"
        );

        // SPOP: distinct members, each removed.
        let mut popped: HashSet<String> = HashSet::new();
        let one = text(&q(con, &["SPOP", "s"]).await);
        popped.insert(one);
        for count in [1, 3, 10, 20] {
            let got = texts(&q(con, &["SPOP", "s", &count.to_string()]).await);
            assert_eq!(got.len(), count, "{kind} SPOP {count}");
            for m in got {
                assert!(all.contains(&m));
                assert!(popped.insert(m), "{kind}: popped twice");
            }
        }
        assert_eq!(int_of(con, &["SCARD", "s"]).await, 15);
        for m in &popped {
            assert_eq!(int_of(con, &["SISMEMBER", "s", m]).await, 0);
        }
        // A count past the size pops the rest and deletes the key.
        let rest = texts(&q(con, &["SPOP", "s", "100"]).await);
        assert_eq!(rest.len(), 15);
        popped.extend(rest);
        assert_eq!(popped, all, "{kind}: every member popped once");
        assert_eq!(int_of(con, &["EXISTS", "s"]).await, 0);
    }

    // Counts close to the size of a bigger set (the paths where Redis
    // copies the set or samples it).
    let big: Vec<String> = (0..2000).map(|i| format!("e{i}")).collect();
    sadd(con, "big", big.iter().cloned()).await;
    for count in [1999, 1990, 1500, 1000, 700, 100] {
        let got = texts(&q(con, &["SRANDMEMBER", "big", &count.to_string()]).await);
        let distinct: HashSet<&String> = got.iter().collect();
        assert_eq!((got.len(), distinct.len()), (count, count));
    }
    let got = texts(&q(con, &["SPOP", "big", "1990"]).await);
    let distinct: HashSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), 1990);
    let left = members(con, &["SMEMBERS", "big"]).await;
    assert_eq!(left.len(), 10);
    assert!(left.iter().all(|m| !distinct.contains(m)));
    q(con, &["FLUSHALL"]).await;
}

/// Every member a full SSCAN returns, running `between` after each step.
async fn full_sscan(
    con: &mut Con,
    key: &str,
    options: &[&str],
    mut between: impl AsyncFnMut(&mut Con, usize),
) -> Vec<String> {
    let mut cursor = "0".to_owned();
    let mut seen = Vec::new();
    for round in 0.. {
        assert!(round < 100_000, "SSCAN does not terminate");
        let mut args = vec!["SSCAN", key, &cursor];
        args.extend_from_slice(options);
        let v = q(con, &args).await;
        let Value::Array(parts) = &v else {
            panic!("SSCAN reply {v:?}")
        };
        assert_eq!(parts.len(), 2, "SSCAN reply {v:?}");
        // The cursor is a bulk string, not an integer.
        assert!(matches!(parts[0], Value::BulkString(_)), "{v:?}");
        let next = text(&parts[0]);
        seen.extend(texts(&parts[1]));
        between(con, round).await;
        if next == "0" {
            break;
        }
        cursor = next;
    }
    seen
}

async fn sscan(con: &mut Con) {
    table(con, rows! {
        ["SSCAN", "missing", "0"] => Ok(array(vec![bulk("0"), array(vec![])])),
        // Options are read only once the set is found.
        ["SSCAN", "missing", "0", "COUNT", "0"] => Ok(array(vec![bulk("0"), array(vec![])])),
        ["SSCAN", "missing", "0", "FOO"] => Ok(array(vec![bulk("0"), array(vec![])])),
        ["SSCAN", "missing", "abc"] => Err("ERR invalid cursor"),
        ["SET", "str", "x"] => Ok(okay()),
        ["SSCAN", "str", "abc"] => Err("ERR invalid cursor"),
        ["SADD", "s", "a", "b", "c"] => Ok(int(3)),
        ["SSCAN", "s", "abc"] => Err("ERR invalid cursor"),
        ["SSCAN", "s", "1x"] => Err("ERR invalid cursor"),
        ["SSCAN", "s", "18446744073709551616"] => Err("ERR invalid cursor"),
        ["SSCAN", "s", "0", "COUNT", "0"] => Err("ERR syntax error"),
        ["SSCAN", "s", "0", "COUNT", "-1"] => Err("ERR syntax error"),
        ["SSCAN", "s", "0", "COUNT", "x"] => Err("ERR value is not an integer or out of range"),
        ["SSCAN", "s", "0", "COUNT"] => Err("ERR syntax error"),
        ["SSCAN", "s", "0", "MATCH"] => Err("ERR syntax error"),
        ["SSCAN", "s", "0", "TYPE", "set"] => Err("ERR syntax error"),
        ["SSCAN", "s", "0", "NOVALUES"] => Err("ERR syntax error"),
        ["SSCAN", "s", "0", "MATCH", "a*", "COUNT", "100"] => Ok(array(vec![bulk("0"), array(vec![bulk("a")])])),
        ["SSCAN", "s", "0", "MATCH", "zz", "COUNT", "100"] => Ok(array(vec![bulk("0"), array(vec![])])),
    })
    .await;
    // Cursors parse like strtoul: a sign is taken, "" is 0.
    for cursor in ["+0", "", "-1", "18446744073709551615"] {
        let v = q(con, &["SSCAN", "s", cursor, "COUNT", "100"]).await;
        assert!(
            matches!(&v, Value::Array(p) if p.len() == 2),
            "{cursor:?}: {v:?}"
        );
    }
    let v = q(con, &["SSCAN", "s", "0", "match", "[ab]", "count", "100"]).await;
    let Value::Array(parts) = &v else {
        panic!("SSCAN reply {v:?}")
    };
    assert_eq!(sorted_texts(&parts[1]), strings(&["a", "b"]));

    for (kind, n) in [("intset", 300), ("hashtable", 1000)] {
        let wanted: HashSet<String> = (0..n)
            .map(|i| {
                if kind == "intset" {
                    i.to_string()
                } else {
                    format!("m:{i}")
                }
            })
            .collect();
        q(con, &["DEL", "big"]).await;
        sadd(con, "big", wanted.iter().cloned()).await;
        for count in [
            &[][..],
            &["COUNT", "1"],
            &["COUNT", "37"],
            &["COUNT", "5000"],
        ] {
            let seen: HashSet<String> = full_sscan(con, "big", count, async |_, _| {})
                .await
                .into_iter()
                .collect();
            assert_eq!(seen, wanted, "{kind} {count:?}");
        }
        // Members present for the whole scan are returned while others
        // come and go.
        let seen: HashSet<String> = full_sscan(con, "big", &["COUNT", "20"], async |con, round| {
            for j in 0..10 {
                q(con, &["SADD", "big", &format!("churn:{round}:{j}")]).await;
            }
            if round > 0 {
                for j in 0..10 {
                    q(con, &["SREM", "big", &format!("churn:{}:{j}", round - 1)]).await;
                }
            }
        })
        .await
        .into_iter()
        .collect();
        let missing: Vec<&String> = wanted.difference(&seen).collect();
        assert!(missing.is_empty(), "{kind}: missed {missing:?}");
        q(con, &["DEL", "big"]).await;
        sadd(con, "big", wanted.iter().cloned()).await;
        let matched =
            full_sscan(con, "big", &["MATCH", "*1", "COUNT", "50"], async |_, _| {}).await;
        let matched: HashSet<String> = matched.into_iter().collect();
        let want: HashSet<String> = wanted
            .iter()
            .filter(|m| m.ends_with('1'))
            .cloned()
            .collect();
        assert_eq!(matched, want, "{kind} MATCH");
    }
    q(con, &["FLUSHALL"]).await;
}

/// RESP3: set replies are sets, SRANDMEMBER's and SSCAN's are arrays, as
/// in Redis 7.0.
async fn resp3(t: &Target) {
    let mut con = t.con().await;
    q(&mut con, &["HELLO", "3"]).await;
    q(&mut con, &["SADD", "s", "a", "b", "c"]).await;
    q(&mut con, &["SADD", "t", "b"]).await;
    let is_set = |v: &Value, n: usize| matches!(v, Value::Set(items) if items.len() == n);
    let is_array = |v: &Value, n: usize| matches!(v, Value::Array(items) if items.len() == n);
    for (args, n) in [
        (&["SMEMBERS", "s"][..], 3),
        (&["SMEMBERS", "missing"], 0),
        (&["SINTER", "s", "t"], 1),
        (&["SINTER", "s", "missing"], 0),
        (&["SUNION", "s", "t"], 3),
        (&["SDIFF", "s", "t"], 2),
        (&["SPOP", "missing", "2"], 0),
        (&["SPOP", "s", "0"], 0),
        (&["SPOP", "s", "1"], 1),
    ] {
        let v = q(&mut con, args).await;
        assert!(is_set(&v, n), "{args:?} in RESP3: {v:?}");
    }
    for (args, n) in [
        (&["SRANDMEMBER", "s", "2"][..], 2),
        (&["SRANDMEMBER", "s", "-3"], 3),
        (&["SRANDMEMBER", "missing", "2"], 0),
        (&["SMISMEMBER", "s", "a", "z"], 2),
        (&["SSCAN", "s", "0", "COUNT", "100"], 2),
    ] {
        let v = q(&mut con, args).await;
        assert!(is_array(&v, n), "{args:?} in RESP3: {v:?}");
    }
    assert_eq!(q(&mut con, &["SPOP", "missing"]).await, nil());
    assert_eq!(q(&mut con, &["SRANDMEMBER", "missing"]).await, nil());
    q(&mut con, &["FLUSHALL"]).await;
}
