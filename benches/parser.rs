//! The RESP request decoder: one SET, GET and MSET of 10 keys as
//! redis-benchmark sends them, an inline command, and a pipelined batch of
//! 16 SETs (`cargo bench --bench parser`).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kriminodb::resp::{Decoded, Decoder, Limits};

fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn key(i: usize) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

/// Decodes every request in `buf`; returns the number of arguments seen.
fn decode_all(decoder: &mut Decoder, buf: &[u8]) -> usize {
    let (mut pos, mut args) = (0, 0);
    while pos < buf.len() {
        match decoder.decode(&buf[pos..]) {
            Ok(Decoded::Command { consumed, .. }) => {
                pos += consumed;
                args += decoder.args.len();
            }
            Ok(Decoded::Nothing { consumed }) => pos += consumed,
            Ok(Decoded::Incomplete { .. }) | Err(_) => break,
        }
    }
    args
}

fn decode(c: &mut Criterion) {
    let value = [b'x'; 16];
    let set = multibulk(&[b"SET", &key(1), &value]);
    let get = multibulk(&[b"GET", &key(1)]);
    let keys: Vec<Vec<u8>> = (0..10).map(key).collect();
    let mut mset_args: Vec<&[u8]> = vec![b"MSET"];
    for k in &keys {
        mset_args.push(k);
        mset_args.push(&value);
    }
    let mset = multibulk(&mset_args);
    let inline = b"SET key:000000000001 \"a value with spaces\"\r\n".to_vec();
    let pipeline: Vec<u8> = (0..16)
        .flat_map(|i| multibulk(&[b"SET", &key(i), &value]))
        .collect();

    let mut group = c.benchmark_group("decode");
    for (name, input, expected_args) in [
        ("set", &set, 3),
        ("get", &get, 2),
        ("mset10", &mset, 21),
        ("inline", &inline, 3),
        ("pipeline16_set", &pipeline, 48),
    ] {
        let mut decoder = Decoder::new(Limits::default());
        assert_eq!(decode_all(&mut decoder, input), expected_args, "{name}");
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| decode_all(&mut decoder, black_box(input)));
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
