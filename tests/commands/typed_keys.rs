//! Key-level commands on every type (see tests/commands.rs): TYPE,
//! SCAN TYPE, WRONGTYPE from string commands, OBJECT ENCODING, MEMORY
//! USAGE, RENAME / COPY / DEL / EXPIRE / PERSIST of hashes, sets and
//! counters, and a key written again after it expired.

use std::time::Duration;

use crate::*;

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

pub async fn typed_keys(t: &Target) {
    let mut con = t.con().await;
    table(
        &mut con,
        rows! {
            ["HSET", "h", "f", "1", "g", "2"] => Ok(int(2)),
            ["SADD", "s", "a", "b", "c"] => Ok(int(3)),
            ["INCRBY", "n", "5"] => Ok(int(5)),
            ["SET", "str", "x"] => Ok(okay()),
            ["TYPE", "h"] => Ok(status("hash")),
            ["TYPE", "s"] => Ok(status("set")),
            ["TYPE", "n"] => Ok(status("string")),
            ["TYPE", "missing"] => Ok(status("none")),
            ["GET", "h"] => Err(WRONGTYPE),
            ["APPEND", "s", "x"] => Err(WRONGTYPE),
            ["STRLEN", "h"] => Err(WRONGTYPE),
            ["INCR", "h"] => Err(WRONGTYPE),
            ["INCRBYFLOAT", "s", "1"] => Err(WRONGTYPE),
            ["GETDEL", "s"] => Err(WRONGTYPE),
            ["SET", "h", "v", "GET"] => Err(WRONGTYPE),
            ["MGET", "h", "n", "str"] => Ok(array(vec![nil(), bulk("5"), bulk("x")])),
            ["HSET", "s", "f", "v"] => Err(WRONGTYPE),
            ["SADD", "h", "m"] => Err(WRONGTYPE),
            ["HGET", "n", "f"] => Err(WRONGTYPE),
            ["EXISTS", "h", "s", "n", "missing"] => Ok(int(3)),
            ["DBSIZE"] => Ok(int(4)),
            // A counter reads and formats as Redis's string would.
            ["INCRBYFLOAT", "n", "0.5"] => Ok(bulk("5.5")),
            ["GET", "n"] => Ok(bulk("5.5")),
            ["INCR", "n"] => Err("ERR value is not an integer or out of range"),
            ["INCRBYFLOAT", "n", "-0.5"] => Ok(bulk("5")),
            ["INCR", "n"] => Ok(int(6)),
            ["APPEND", "n", "0"] => Ok(int(2)),
            ["GET", "n"] => Ok(bulk("60")),
            // RENAME and COPY carry a hash's and a set's contents and TTL.
            ["EXPIRE", "h", "100"] => Ok(int(1)),
            ["RENAME", "h", "h2"] => Ok(okay()),
            ["TYPE", "h"] => Ok(status("none")),
            ["HGET", "h2", "g"] => Ok(bulk("2")),
            ["TTL", "h2"] => Ok(int(100)),
            ["COPY", "s", "s2"] => Ok(int(1)),
            ["SCARD", "s2"] => Ok(int(3)),
            ["COPY", "s", "h2"] => Ok(int(0)),
            ["COPY", "s", "h2", "REPLACE"] => Ok(int(1)),
            ["TYPE", "h2"] => Ok(status("set")),
            ["TTL", "h2"] => Ok(int(-1)),
            ["RENAMENX", "s", "s2"] => Ok(int(0)),
            ["PERSIST", "h2"] => Ok(int(0)),
            ["EXPIRE", "s2", "50"] => Ok(int(1)),
            ["PERSIST", "s2"] => Ok(int(1)),
            ["TTL", "s2"] => Ok(int(-1)),
            // A SET replaces a hash whole.
            ["SET", "s2", "plain"] => Ok(okay()),
            ["TYPE", "s2"] => Ok(status("string")),
            ["DEL", "h2", "s2", "s", "n", "str"] => Ok(int(5)),
            ["DBSIZE"] => Ok(int(0)),
            ["OBJECT", "ENCODING", "missing"] => Ok(nil()),
            ["MEMORY", "USAGE", "missing"] => Ok(nil()),
        },
    )
    .await;

    // SCAN TYPE keeps only keys of that type.
    q(&mut con, &["HSET", "sh", "f", "v"]).await;
    q(&mut con, &["SADD", "ss", "m"]).await;
    q(&mut con, &["SET", "sk", "v"]).await;
    for (kind, key) in [("hash", "sh"), ("set", "ss"), ("string", "sk")] {
        let Value::Array(reply) = q(&mut con, &["SCAN", "0", "COUNT", "1000", "TYPE", kind]).await
        else {
            panic!("SCAN replies with an array");
        };
        assert_eq!(
            sorted_texts(&reply[1]),
            vec![key.to_string()],
            "SCAN TYPE {kind}"
        );
    }
    // OBJECT ENCODING names an encoding for every type, a small hash's
    // as Redis names its listpack and a large one's as its hash table
    // (600 fields: past redis-server's built-in 512 and redis.conf's and
    // our 128); MEMORY USAGE grows with the value.
    for key in ["sh", "ss", "sk"] {
        assert!(matches!(
            q(&mut con, &["OBJECT", "ENCODING", key]).await,
            Value::BulkString(_)
        ));
    }
    assert_eq!(
        q(&mut con, &["OBJECT", "ENCODING", "sh"]).await,
        Value::BulkString(b"listpack".to_vec())
    );
    let small = int_of(&mut con, &["MEMORY", "USAGE", "sh"]).await;
    let fields: Vec<String> = (0..600).map(|i| format!("field-{i}")).collect();
    let mut hset = vec!["HSET", "sh"];
    for f in &fields {
        hset.extend([f.as_str(), "some value"]);
    }
    q(&mut con, &hset).await;
    assert_eq!(
        q(&mut con, &["OBJECT", "ENCODING", "sh"]).await,
        Value::BulkString(b"hashtable".to_vec())
    );
    let large = int_of(&mut con, &["MEMORY", "USAGE", "sh"]).await;
    assert!(large > small + 500 * 20, "MEMORY USAGE {small} -> {large}");

    // A hash that expired is gone; written again, it has no TTL and stays.
    q(&mut con, &["PEXPIRE", "sh", "100"]).await;
    t.advance(Duration::from_millis(150)).await;
    assert_eq!(q(&mut con, &["EXISTS", "sh"]).await, int(0));
    assert_eq!(q(&mut con, &["HSET", "sh", "again", "1"]).await, int(1));
    assert_eq!(q(&mut con, &["TTL", "sh"]).await, int(-1));
    assert_eq!(
        q(&mut con, &["HGETALL", "sh"]).await,
        array(vec![bulk("again"), bulk("1")])
    );
    q(&mut con, &["FLUSHALL"]).await;
    assert_eq!(q(&mut con, &["DBSIZE"]).await, int(0));
}
