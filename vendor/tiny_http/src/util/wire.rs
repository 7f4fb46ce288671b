//! PATCH (tollgate): the read side of a connection, held to a deadline.
//!
//! Before every read of the socket the time left until the deadline becomes
//! the socket's read timeout, so a client that trickles bytes cannot stretch
//! a phase (head, body, idle wait) past its deadline one byte at a time.

use std::io::{Error, ErrorKind, Read, Result};
use std::time::Instant;

use super::RefinedTcpStream;

pub struct Wire {
    stream: RefinedTcpStream,
    deadline: Option<Instant>,
    /// Bytes read off the socket so far (body deadlines grow with it).
    pub(crate) bytes_read: u64,
}

impl Wire {
    pub fn new(stream: RefinedTcpStream) -> Wire {
        Wire { stream, deadline: None, bytes_read: 0 }
    }

    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    pub fn stream(&self) -> &RefinedTcpStream {
        &self.stream
    }

    pub fn stream_mut(&mut self) -> &mut RefinedTcpStream {
        &mut self.stream
    }
}

pub fn timed_out() -> Error {
    Error::new(ErrorKind::TimedOut, "the client did not send in time")
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        match self.stream.read(buf) {
            Ok(n) => {
                self.bytes_read += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => Err(timed_out()),
            Err(e) => Err(e),
        }
    }
}
