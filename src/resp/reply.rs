//! Reply encoder: writes RESP2 or RESP3 straight into the connection's
//! output buffer, so all replies of a pipelined batch leave in one write.

/// The connection's output buffer plus the protocol version it speaks.
#[derive(Debug)]
pub struct Reply {
    pub buf: Vec<u8>,
    pub resp3: bool,
    /// Bytes of queued replies past which no more bulk data is appended
    /// and `overflow` is set (the output-buffer limit). Checked before
    /// each bulk rather than with its size, so one reply of any size still
    /// goes out; the buffer stays under the limit plus one value.
    pub limit: usize,
    /// The limit was passed: the buffer is incomplete and the client is to
    /// be closed without it, as Redis's close-ASAP.
    pub overflow: bool,
}

impl Default for Reply {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            resp3: false,
            limit: usize::MAX,
            overflow: false,
        }
    }
}

impl Reply {
    /// True once the queued replies passed the limit: through a bulk that
    /// was refused, or small replies adding up.
    pub fn over_limit(&self) -> bool {
        self.overflow || self.buf.len() > self.limit
    }

    fn line(&mut self, prefix: u8, body: &[u8]) {
        self.buf.push(prefix);
        self.buf.extend_from_slice(body);
        self.buf.extend_from_slice(b"\r\n");
    }

    fn number_line(&mut self, prefix: u8, n: i64) {
        let mut fmt = itoa::Buffer::new();
        self.line(prefix, fmt.format(n).as_bytes());
    }

    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// A simple string; must not contain CR or LF.
    pub fn simple(&mut self, s: &str) {
        self.line(b'+', s.as_bytes());
    }

    /// An error; `msg` starts with the error code (`ERR …`, `WRONGTYPE …`).
    /// Line breaks are replaced so a message can never break the framing.
    pub fn error(&mut self, msg: &str) {
        self.buf.push(b'-');
        self.buf.extend(
            msg.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn int(&mut self, n: i64) {
        self.number_line(b':', n);
    }

    pub fn bulk(&mut self, data: &[u8]) {
        // Values are what make a reply big (MGET of many, EXEC of many
        // GETs): the one compare on this path.
        if self.buf.len() > self.limit {
            self.overflow = true;
            return;
        }
        self.number_line(b'$', data.len() as i64);
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn bulk_int(&mut self, n: i64) {
        let mut fmt = itoa::Buffer::new();
        self.bulk(fmt.format(n).as_bytes());
    }

    /// The null reply: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) {
        if self.resp3 {
            self.buf.extend_from_slice(b"_\r\n");
        } else {
            self.buf.extend_from_slice(b"$-1\r\n");
        }
    }

    /// A null array: `*-1` in RESP2, `_` in RESP3.
    pub fn null_array(&mut self) {
        if self.resp3 {
            self.buf.extend_from_slice(b"_\r\n");
        } else {
            self.buf.extend_from_slice(b"*-1\r\n");
        }
    }

    pub fn array(&mut self, len: usize) {
        self.number_line(b'*', len as i64);
    }

    /// A map of `len` pairs: `%` in RESP3, a flat array in RESP2.
    pub fn map(&mut self, len: usize) {
        if self.resp3 {
            self.number_line(b'%', len as i64);
        } else {
            self.array(len * 2);
        }
    }

    /// A set: `~` in RESP3, an array in RESP2.
    pub fn set(&mut self, len: usize) {
        if self.resp3 {
            self.number_line(b'~', len as i64);
        } else {
            self.array(len);
        }
    }

    /// Long text (INFO, CLIENT LIST): a verbatim string in RESP3, a bulk
    /// string in RESP2.
    pub fn verbatim(&mut self, text: &str) {
        if self.resp3 {
            self.number_line(b'=', text.len() as i64 + 4);
            self.buf.extend_from_slice(b"txt:");
            self.buf.extend_from_slice(text.as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(text.as_bytes());
        }
    }

    /// A HELP reply: one simple string per line, as Redis sends them.
    pub fn help(&mut self, lines: &[&str]) {
        self.array(lines.len());
        for line in lines {
            self.simple(line);
        }
    }

    pub fn bulks<'a>(&mut self, items: impl ExactSizeIterator<Item = &'a [u8]>) {
        self.array(items.len());
        for item in items {
            self.bulk(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_and_resp3_differ_only_where_redis_does() {
        let mut r2 = Reply::default();
        let mut r3 = Reply {
            resp3: true,
            ..Reply::default()
        };
        for r in [&mut r2, &mut r3] {
            r.null();
            r.map(1);
            r.bulk(b"k");
            r.int(-3);
            r.verbatim("x");
        }
        assert_eq!(r2.buf, b"$-1\r\n*2\r\n$1\r\nk\r\n:-3\r\n$1\r\nx\r\n");
        assert_eq!(r3.buf, b"_\r\n%1\r\n$1\r\nk\r\n:-3\r\n=5\r\ntxt:x\r\n");
    }

    #[test]
    fn bulks_past_the_limit_are_dropped_and_flagged() {
        let mut r = Reply {
            limit: 10,
            ..Reply::default()
        };
        r.bulk(&[b'x'; 20]);
        assert!(!r.overflow, "one reply of any size goes in");
        let len = r.buf.len();
        r.bulk(&[b'x'; 20]);
        assert!(r.overflow && r.over_limit());
        assert_eq!(r.buf.len(), len);
    }

    #[test]
    fn errors_cannot_break_framing() {
        let mut r = Reply::default();
        r.error("ERR bad\r\nthing");
        assert_eq!(r.buf, b"-ERR bad  thing\r\n");
    }
}
