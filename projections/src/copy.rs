//! Rows for PostgreSQL's `COPY … FROM STDIN (FORMAT binary)`: the cheapest way to load many
//! rows (the server parses no text: integers, booleans and timestamps arrive as they are
//! stored). Used where a projection writes a lot at once: the journal's lines, and every
//! table of a rebuild's fast path ([`crate::runtime::Rebuilder`]).
//!
//! The format (PostgreSQL's documentation, "COPY", binary format): a signature and two
//! 32-bit header fields; per row a 16-bit field count, then per field a 32-bit length (−1
//! for NULL) and the value in network byte order; a 16-bit −1 as the trailer.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::runtime::ProjectionError;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01T00:00:00Z).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One table's rows, encoded as they are added.
#[derive(Debug, Clone)]
pub struct BinaryCopy {
    /// `COPY <table> (<columns>) FROM STDIN (FORMAT binary)`.
    statement: String,
    columns: i16,
    data: Vec<u8>,
    rows: usize,
    /// Fields added to the row in progress.
    fields: i16,
}

impl BinaryCopy {
    /// Rows for `table` with these `columns`, in order.
    pub fn new(table: &str, columns: &[&str]) -> Self {
        Self::with_capacity(table, columns, 64 * 1024)
    }

    /// As [`Self::new`], with room for about `bytes` of rows (no reallocation below that).
    pub fn with_capacity(table: &str, columns: &[&str], bytes: usize) -> Self {
        let mut data = Vec::with_capacity(bytes);
        data.extend_from_slice(SIGNATURE);
        data.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        data.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        Self {
            statement: format!(
                "COPY {table} ({}) FROM STDIN (FORMAT binary)",
                columns.join(", ")
            ),
            columns: i16::try_from(columns.len()).unwrap_or(i16::MAX),
            data,
            rows: 0,
            fields: 0,
        }
    }

    /// Starts a row; its fields follow, one call each, in column order.
    pub fn row(&mut self) -> &mut Self {
        debug_assert!(
            self.rows == 0 || self.fields == self.columns,
            "the previous row is complete"
        );
        self.data.extend_from_slice(&self.columns.to_be_bytes());
        self.rows += 1;
        self.fields = 0;
        self
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.data
            .extend_from_slice(&i32::try_from(bytes.len()).unwrap_or(i32::MAX).to_be_bytes());
        self.data.extend_from_slice(bytes);
        self.fields += 1;
        self
    }

    pub fn bigint(&mut self, value: i64) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    pub fn smallint(&mut self, value: i16) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    pub fn boolean(&mut self, value: bool) -> &mut Self {
        self.field(&[u8::from(value)])
    }

    pub fn text(&mut self, value: &str) -> &mut Self {
        self.field(value.as_bytes())
    }

    /// A text field made of `parts` one after the other (no string is built for it).
    pub fn text_parts(&mut self, parts: &[&str]) -> &mut Self {
        let length: usize = parts.iter().map(|part| part.len()).sum();
        self.data
            .extend_from_slice(&i32::try_from(length).unwrap_or(i32::MAX).to_be_bytes());
        for part in parts {
            self.data.extend_from_slice(part.as_bytes());
        }
        self.fields += 1;
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.data.extend_from_slice(&(-1i32).to_be_bytes());
        self.fields += 1;
        self
    }

    pub fn timestamptz(&mut self, value: DateTime<Utc>) -> &mut Self {
        self.field(&(value.timestamp_micros() - POSTGRES_EPOCH_MICROS).to_be_bytes())
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Sends the rows (nothing when there are none).
    pub async fn send(mut self, connection: &mut PgConnection) -> Result<u64, ProjectionError> {
        if self.rows == 0 {
            return Ok(0);
        }
        self.data.extend_from_slice(&(-1i16).to_be_bytes());
        let mut copy = connection.copy_in_raw(&self.statement).await?;
        copy.send(self.data).await?;
        Ok(copy.finish().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_encoded_as_postgres_reads_them() {
        let mut copy = BinaryCopy::new("t", &["a", "b", "c", "d"]);
        copy.row()
            .bigint(1)
            .text_parts(&["", "x"])
            .boolean(true)
            .null();
        let at = DateTime::from_timestamp(946_684_800, 1_000).unwrap();
        let mut times = BinaryCopy::new("u", &["at"]);
        times.row().timestamptz(at);
        assert_eq!(copy.rows(), 1);
        let mut expected = SIGNATURE.to_vec();
        expected.extend_from_slice(&[0; 8]);
        expected.extend_from_slice(&4i16.to_be_bytes());
        expected.extend_from_slice(&8i32.to_be_bytes());
        expected.extend_from_slice(&1i64.to_be_bytes());
        expected.extend_from_slice(&1i32.to_be_bytes());
        expected.push(b'x');
        expected.extend_from_slice(&1i32.to_be_bytes());
        expected.push(1);
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(copy.data, expected);
        // One microsecond after PostgreSQL's epoch.
        assert_eq!(&times.data[times.data.len() - 8..], &1i64.to_be_bytes());
        assert_eq!(
            copy.statement,
            "COPY t (a, b, c, d) FROM STDIN (FORMAT binary)"
        );
    }
}
