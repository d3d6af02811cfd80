//! [`Api`]: a plain HTTP/1.1 client of the daemon's public API over its Unix socket, as
//! small as any client could be (one connection per request, `Connection: close`), so
//! the tests see what any HTTP client sees.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use banger_wire::public::ExecEvent;
use serde::de::DeserializeOwned;

/// The public API of the run's daemon.
pub struct Api {
    pub socket: PathBuf,
}

/// An answer: its status and a reader of its body (chunked transfer decoded).
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    body: BufReader<Box<dyn Read + Send>>,
}

impl Api {
    /// Sends `METHOD path` with `body`; the body of the answer is read as it comes.
    pub fn send(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        let mut conn = UnixStream::connect(&self.socket)
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.socket.display()));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: bangerd\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes())
            .and_then(|()| conn.write_all(body))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let mut reader = BufReader::new(conn);
        let status_line = line(&mut reader);
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: bad status line {status_line:?}"));
        let (mut chunked, mut length, mut content_type) = (false, None, None);
        loop {
            let header = line(&mut reader);
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((&header, ""));
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "content-length" => length = value.parse::<u64>().ok(),
                "content-type" => content_type = Some(value.to_string()),
                _ => {}
            }
        }
        let body: Box<dyn Read + Send> = match (chunked, length) {
            (true, _) => Box::new(Chunked {
                inner: reader,
                left: 0,
                done: false,
            }),
            (false, Some(n)) => Box::new(reader.take(n)),
            (false, None) => Box::new(reader),
        };
        Reply {
            status,
            content_type,
            body: BufReader::new(body),
        }
    }

    /// Sends a request that must answer `status`; its body.
    #[track_caller]
    pub fn expect(&self, status: u16, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
        let mut reply = self.send(method, path, body);
        let got = reply.status;
        let body = reply.bytes();
        assert_eq!(
            got,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&body)
        );
        body
    }

    /// Sends a request that must answer `status` with JSON; the JSON.
    #[track_caller]
    pub fn json<T: DeserializeOwned>(
        &self,
        status: u16,
        method: &str,
        path: &str,
        body: &str,
    ) -> T {
        let body = self.expect(status, method, path, body.as_bytes());
        serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("{method} {path}: {e} in {}", String::from_utf8_lossy(&body))
        })
    }
}

impl Reply {
    /// The rest of the body.
    pub fn bytes(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.body
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("read the body: {e}"));
        out
    }

    /// The next line of an exec's event stream; `None` at its end.
    pub fn event(&mut self) -> Option<ExecEvent> {
        let mut text = String::new();
        match self.body.read_line(&mut text) {
            Ok(0) => None,
            Ok(_) => {
                Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("event {text:?}: {e}")))
            }
            Err(e) => panic!("read an event: {e}"),
        }
    }

    /// Every remaining event.
    pub fn events(&mut self) -> Vec<ExecEvent> {
        std::iter::from_fn(|| self.event()).collect()
    }
}

fn line(reader: &mut impl BufRead) -> String {
    let mut text = String::new();
    reader
        .read_line(&mut text)
        .unwrap_or_else(|e| panic!("read the answer: {e}"));
    text.trim_end_matches(['\r', '\n']).to_string()
}

/// A chunked transfer's data.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut size = String::new();
            self.inner.read_line(&mut size)?;
            let size = size.trim_end_matches(['\r', '\n']);
            let size = size.split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(size, 16).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad chunk size {size:?} (a cut-off transfer)"),
                )
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n;
        if self.left == 0 {
            let mut crlf = String::new();
            self.inner.read_line(&mut crlf)?;
        }
        Ok(n)
    }
}
