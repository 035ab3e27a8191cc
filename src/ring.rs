//! The bounded, contiguous series buffer behind the store's rows and the seasonal
//! residual rows.

/// A bounded series of values whose last `cap` points are always one contiguous slice.
///
/// Points are appended at the end; when the buffer reaches `cap + slack` the oldest
/// surplus is dropped with one `memmove`. With `slack = cap / 16` memory is at most
/// 1.0625 × `cap` and each pushed point costs about 16 moved values (128 bytes of
/// `memmove`, negligible beside decoding the point), in exchange for handing detectors a
/// plain `&[f64]` instead of two halves of a circular buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Ring {
    buf: Vec<f64>,
    cap: usize,
}

impl Ring {
    /// An empty ring holding at most `cap` points (at least 1).
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Ring {
            buf: Vec::with_capacity(cap + Self::slack(cap)),
            cap,
        }
    }

    fn slack(cap: usize) -> usize {
        (cap / 16).max(8)
    }

    /// Appends a point, dropping the oldest beyond `cap`.
    pub fn push(&mut self, v: f64) {
        if self.buf.len() == self.cap + Self::slack(self.cap) {
            let surplus = self.buf.len() - self.cap + 1;
            self.buf.drain(..surplus);
        }
        self.buf.push(v);
    }

    /// The kept points, oldest first (at most `cap`).
    pub fn as_slice(&self) -> &[f64] {
        &self.buf[self.buf.len().saturating_sub(self.cap)..]
    }

    /// Number of kept points.
    pub fn len(&self) -> usize {
        self.buf.len().min(self.cap)
    }

    /// Most points kept.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// `true` when no point was pushed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The point `back` steps before the last (0 = last), if kept.
    pub fn from_end_mut(&mut self, back: usize) -> Option<&mut f64> {
        if back >= self.len() {
            return None;
        }
        let i = self.buf.len() - 1 - back;
        self.buf.get_mut(i)
    }

    /// The last point, if any.
    pub fn last(&self) -> Option<f64> {
        self.buf.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_cap_points_contiguous() {
        let mut r = Ring::new(4);
        for i in 0..100 {
            r.push(f64::from(i));
            let s = r.as_slice();
            assert_eq!(s.len(), (i as usize + 1).min(4));
            assert_eq!(*s.last().unwrap(), f64::from(i));
            assert!(s.windows(2).all(|w| w[1] == w[0] + 1.0));
        }
        assert!(r.buf.capacity() <= 4 + 8);
    }

    #[test]
    fn overwrites_from_the_end() {
        let mut r = Ring::new(3);
        for v in [1.0, 2.0, 3.0, 4.0] {
            r.push(v);
        }
        *r.from_end_mut(1).unwrap() = 9.0;
        assert_eq!(r.as_slice(), &[2.0, 9.0, 4.0]);
        assert!(r.from_end_mut(3).is_none());
    }
}
