//! containerd's content store write protocol (STAT → WRITE… → COMMIT on one bidi stream).
//!
//! Two rules of the protocol are easy to break and each breaks a pull:
//! - every WRITE and the COMMIT carry the ingest's *current* offset: an offset of 0 on an ingest
//!   that already holds bytes truncates it (so COMMIT carries `offset == total`);
//! - data on a COMMIT is written too, so the COMMIT carries no data.

use std::collections::HashMap;

use containerd_client::services::v1::{
    WriteAction, WriteContentRequest, WriteContentResponse, content_client::ContentClient,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use super::{Ctx, grpc_error};
use crate::ports::{ErrorKind, RuntimeError};

/// Largest WRITE message: a bigger body chunk is cut into slices of at most this size. Every
/// message is buffered whole on its way (its data, tonic's encoding, HTTP/2's send queue), so
/// this bounds the agent's memory per download; with 1 MiB messages the benchmark's peak RSS was
/// about 8 MiB higher than with 64 KiB ones, at no measurable speed difference.
pub(crate) const MAX_WRITE: usize = 64 * 1024;
/// WRITE messages sent and not yet answered, per blob. The writes are pipelined: containerd
/// has the next messages queued while it stores the current one, and memory stays bounded at
/// about `WRITE_WINDOW * MAX_WRITE` per blob.
pub(crate) const WRITE_WINDOW: usize = 8;

/// Cuts a body chunk into WRITE-sized slices (no copy: the slices share the chunk's buffer).
pub(crate) fn slices(mut chunk: bytes::Bytes, max: usize) -> impl Iterator<Item = bytes::Bytes> {
    std::iter::from_fn(move || (!chunk.is_empty()).then(|| chunk.split_to(chunk.len().min(max))))
}

/// Streams `body` into the open ingest as WRITE messages at increasing offsets, without waiting
/// for each reply: up to [`WRITE_WINDOW`] messages are in flight while the replies are read
/// concurrently, each checked against the offset its write must have reached. `offset` is the
/// ingest offset the body starts at and ends as the offset of the last message sent. Returns
/// the number of messages.
async fn pipeline_writes<S>(
    w: &mut Writer,
    r#ref: &str,
    size: i64,
    offset: &mut i64,
    body: S,
) -> Result<u64, RuntimeError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, RuntimeError>>,
{
    let Writer { tx, rx, what } = w;
    let what: &str = what;
    // The offsets the replies must report, in order; its bound is the window.
    let (expect_tx, mut expect_rx) = mpsc::channel::<i64>(WRITE_WINDOW);
    let send = async {
        let mut msgs = 0u64;
        futures_util::pin_mut!(body);
        while let Some(chunk) = body.next().await {
            for part in slices(chunk?, MAX_WRITE) {
                let end = *offset + part.len() as i64;
                if end > size {
                    return Err(RuntimeError::new(
                        ErrorKind::Other,
                        format!("{what}: registry sent more than the {size} bytes expected"),
                    ));
                }
                let closed = || {
                    RuntimeError::new(
                        ErrorKind::Unavailable,
                        format!("{what}: write stream closed"),
                    )
                };
                expect_tx.send(end).await.map_err(|_| closed())?;
                tx.send(write_msg(r#ref, *offset, part.to_vec()))
                    .await
                    .map_err(|_| closed())?;
                *offset = end;
                msgs += 1;
            }
        }
        drop(expect_tx);
        Ok::<_, RuntimeError>(msgs)
    };
    let check = async {
        while let Some(end) = expect_rx.recv().await {
            let reply = next_reply(rx, what).await?;
            if reply.offset != end {
                return Err(RuntimeError::new(
                    ErrorKind::Other,
                    format!(
                        "{what}: ingest at offset {} after writing up to {end}",
                        reply.offset
                    ),
                ));
            }
        }
        Ok::<_, RuntimeError>(())
    };
    let (msgs, ()) = tokio::try_join!(send, check)?;
    Ok(msgs)
}

async fn next_reply(
    rx: &mut Streaming<WriteContentResponse>,
    what: &str,
) -> Result<WriteContentResponse, RuntimeError> {
    match rx.next().await {
        Some(Ok(resp)) => Ok(resp),
        Some(Err(status)) => Err(grpc_error(what, status)),
        None => Err(RuntimeError::new(
            ErrorKind::Unavailable,
            format!("{what}: write stream ended"),
        )),
    }
}

/// What to do after the STAT reply, given the ingest's offset and the blob's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    /// containerd already holds every byte (the blob exists in another namespace, or a previous
    /// ingest finished): commit without downloading.
    CommitOnly,
    /// A partial ingest: download from this offset (HTTP Range) and continue writing there.
    From(u64),
    /// Nothing written yet.
    Start,
}

pub(crate) fn resume_plan(offset: i64, total: i64) -> Resume {
    match offset {
        o if o <= 0 => Resume::Start,
        o if o >= total => Resume::CommitOnly,
        o => Resume::From(o as u64),
    }
}

/// The ingest reference for a blob: stable, so an interrupted download resumes next time.
pub(crate) fn ingest_ref(digest: &str) -> String {
    format!("kip-{digest}")
}

pub(crate) fn stat_msg(r#ref: &str, total: i64, expected: &str) -> WriteContentRequest {
    WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: r#ref.to_owned(),
        total,
        expected: expected.to_owned(),
        ..Default::default()
    }
}

pub(crate) fn write_msg(r#ref: &str, offset: i64, data: Vec<u8>) -> WriteContentRequest {
    WriteContentRequest {
        action: WriteAction::Write as i32,
        r#ref: r#ref.to_owned(),
        offset,
        data,
        ..Default::default()
    }
}

pub(crate) fn commit_msg(
    r#ref: &str,
    total: i64,
    expected: &str,
    labels: HashMap<String, String>,
) -> WriteContentRequest {
    WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: r#ref.to_owned(),
        total,
        expected: expected.to_owned(),
        // The ingest's offset is `total` by now; 0 here would truncate it.
        offset: total,
        // No data: whatever a COMMIT carries is appended.
        data: Vec::new(),
        labels,
    }
}

/// How a blob got into the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// It was there already (labels updated).
    Present,
    /// containerd had all bytes; committed without download.
    CommittedOnly,
    /// Downloaded this many bytes.
    Downloaded(u64),
}

/// One open Write stream.
struct Writer {
    tx: mpsc::Sender<WriteContentRequest>,
    rx: Streaming<WriteContentResponse>,
    what: String,
}

impl Writer {
    /// Opens the stream with its first request (containerd answers the call only once a message
    /// arrives, so the request must be queued before the call is awaited) and reads its reply.
    async fn open(
        ctx: &Ctx,
        what: String,
        first: WriteContentRequest,
    ) -> Result<(Self, WriteContentResponse), RuntimeError> {
        let (tx, rx) = mpsc::channel(4);
        tx.send(first).await.map_err(|_| {
            RuntimeError::new(ErrorKind::Other, format!("{what}: write stream closed"))
        })?;
        let mut client = ContentClient::new(ctx.channel.clone());
        let req = ctx.request(ReceiverStream::new(rx));
        let rx = client
            .write(req)
            .await
            .map_err(|s| grpc_error(&what, s))?
            .into_inner();
        let mut w = Self { tx, rx, what };
        let reply = w.reply().await?;
        Ok((w, reply))
    }

    async fn reply(&mut self) -> Result<WriteContentResponse, RuntimeError> {
        next_reply(&mut self.rx, &self.what).await
    }

    /// Sends one request and reads its reply.
    async fn call(
        &mut self,
        req: WriteContentRequest,
    ) -> Result<WriteContentResponse, RuntimeError> {
        self.tx.send(req).await.map_err(|_| {
            RuntimeError::new(
                ErrorKind::Unavailable,
                format!("{}: write stream closed", self.what),
            )
        })?;
        self.reply().await
    }
}

/// Whether a Write failed because another writer holds the ingest (another agent or pull).
fn is_locked(e: &RuntimeError) -> bool {
    e.message.contains("locked") || e.message.contains("unavailable: ref")
}

/// Whether a Write failed because the blob got committed meanwhile (by another pull sharing a
/// layer, or another agent); containerd words this differently on STAT and on COMMIT.
fn is_exists(e: &RuntimeError) -> bool {
    e.message.contains("already exists") || e.message.contains("exists")
}

/// Puts one blob into the content store, downloading through `fetch(range_from)` only what is
/// missing, and sets `labels` on it.
pub(crate) async fn ensure_blob<F, Fut>(
    ctx: &Ctx,
    digest: &str,
    size: i64,
    labels: HashMap<String, String>,
    fetch: F,
) -> Result<Written, RuntimeError>
where
    F: Fn(Option<u64>) -> Fut,
    Fut: Future<Output = Result<reqwest::Response, RuntimeError>>,
{
    let mut delay = std::time::Duration::from_millis(50);
    loop {
        if ctx.content_exists(digest).await? {
            ctx.update_content_labels(digest, labels).await?;
            return Ok(Written::Present);
        }
        match write_blob(ctx, digest, size, labels.clone(), &fetch).await {
            // Committed by someone else: the next round only labels it.
            Err(e) if is_exists(&e) => {}
            Err(e) if is_locked(&e) => {
                // Another writer is on it: wait for it to finish (or to give up).
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

async fn write_blob<F, Fut>(
    ctx: &Ctx,
    digest: &str,
    size: i64,
    labels: HashMap<String, String>,
    fetch: &F,
) -> Result<Written, RuntimeError>
where
    F: Fn(Option<u64>) -> Fut,
    Fut: Future<Output = Result<reqwest::Response, RuntimeError>>,
{
    let what = format!("content {digest}");
    let r#ref = ingest_ref(digest);
    let (mut w, stat) = Writer::open(ctx, what.clone(), stat_msg(&r#ref, size, digest)).await?;
    let plan = resume_plan(stat.offset, size);
    tracing::debug!(digest, offset = stat.offset, size, ?plan, "ingest");
    let mut downloaded = 0u64;
    let mut offset = 0i64;
    let transfer = async {
        if plan == Resume::CommitOnly {
            return Ok(());
        }
        let range_from = match plan {
            Resume::From(n) => Some(n),
            _ => None,
        };
        let resp = fetch(range_from).await?;
        // 206: the registry continues at range_from; 200: the whole blob, so start over (a WRITE
        // at offset 0 truncates the ingest, which is what is wanted then).
        offset = match (range_from, resp.status().as_u16()) {
            (Some(n), 206) => n as i64,
            _ => 0,
        };
        let started = std::time::Instant::now();
        let first = offset;
        let msgs = pipeline_writes(
            &mut w,
            &r#ref,
            size,
            &mut offset,
            resp.bytes_stream().map(|c| {
                c.map_err(|e| {
                    RuntimeError::new(ErrorKind::Unavailable, format!("{what}: download: {e}"))
                })
            }),
        )
        .await?;
        downloaded = (offset - first) as u64;
        tracing::debug!(
            digest,
            bytes = downloaded,
            msgs,
            ms = started.elapsed().as_millis() as u64,
            "blob streamed"
        );
        if offset != size {
            return Err(RuntimeError::new(
                ErrorKind::Unavailable,
                format!("{what}: download ended at {offset} of {size} bytes"),
            ));
        }
        Ok(())
    };
    if let Err(e) = transfer.await {
        if offset > 0 && offset < size {
            keep_for_resume(ctx, &r#ref).await;
        }
        return Err(e);
    }
    match w
        .call(commit_msg(&r#ref, size, digest, labels.clone()))
        .await
    {
        Ok(reply) => {
            if !reply.digest.is_empty() && reply.digest != digest {
                return Err(RuntimeError::new(
                    ErrorKind::Other,
                    format!("{what}: committed content has digest {}", reply.digest),
                ));
            }
        }
        Err(e) if is_exists(&e) => return Err(e),
        Err(e) => {
            // A bad ingest (wrong bytes from an earlier run) would fail every resume: drop it.
            abort(ctx, &r#ref).await;
            return Err(e);
        }
    }
    drop(w.tx);
    if matches!(plan, Resume::From(_)) {
        ctx.delete_lease(&resume_lease(&r#ref)).await;
    }
    Ok(if plan == Resume::CommitOnly {
        Written::CommittedOnly
    } else {
        Written::Downloaded(downloaded)
    })
}

/// Writes a small in-memory document (manifest, index, config).
pub(crate) async fn ensure_bytes(
    ctx: &Ctx,
    digest: &str,
    bytes: &[u8],
    labels: HashMap<String, String>,
) -> Result<(), RuntimeError> {
    let mut delay = std::time::Duration::from_millis(50);
    loop {
        match write_bytes(ctx, digest, bytes, labels.clone()).await {
            Err(e) if is_exists(&e) => {}
            Err(e) if is_locked(&e) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

async fn write_bytes(
    ctx: &Ctx,
    digest: &str,
    bytes: &[u8],
    labels: HashMap<String, String>,
) -> Result<(), RuntimeError> {
    if ctx.content_exists(digest).await? {
        return ctx.update_content_labels(digest, labels).await;
    }
    let what = format!("content {digest}");
    let r#ref = ingest_ref(digest);
    let size = bytes.len() as i64;
    let (mut w, stat) = Writer::open(ctx, what.clone(), stat_msg(&r#ref, size, digest)).await?;
    if resume_plan(stat.offset, size) != Resume::CommitOnly {
        // Always rewrite small documents from the start.
        w.call(write_msg(&r#ref, 0, bytes.to_vec())).await?;
    }
    match w
        .call(commit_msg(&r#ref, size, digest, labels.clone()))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.message.contains("already exists") => {
            ctx.update_content_labels(digest, labels).await
        }
        Err(e) => Err(e),
    }
}

/// The lease that keeps a partial ingest for the next pull to resume.
pub(crate) fn resume_lease(r#ref: &str) -> String {
    format!(
        "kip-resume-{}",
        r#ref.trim_start_matches("kip-").replace(':', "-")
    )
}

/// Moves a partial ingest under a lease of its own (expiring like the pull leases), so deleting
/// the failed pull's lease does not let GC remove the bytes already downloaded.
async fn keep_for_resume(ctx: &Ctx, r#ref: &str) {
    let Some(keeper) = ctx.keeper(&resume_lease(r#ref)).await else {
        return;
    };
    if let Err(e) = keeper.hold("ingests", r#ref).await {
        tracing::debug!(ingest = r#ref, error = %e, "resume lease");
    }
}

/// Drops an ingest (best effort).
pub(crate) async fn abort(ctx: &Ctx, r#ref: &str) {
    let req = ctx.request(containerd_client::services::v1::AbortRequest {
        r#ref: r#ref.to_owned(),
    });
    if let Err(s) = ContentClient::new(ctx.channel.clone()).abort(req).await {
        tracing::debug!(ingest = r#ref, error = %s.message(), "abort ingest");
    }
}

/// Whether a gRPC status means "not there".
pub(crate) fn is_not_found(code: Code) -> bool {
    code == Code::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_after_stat() {
        let table = [
            (0, 100, Resume::Start),
            (-1, 100, Resume::Start),
            (1, 100, Resume::From(1)),
            (99, 100, Resume::From(99)),
            (100, 100, Resume::CommitOnly),
            (0, 0, Resume::Start),
        ];
        for (offset, total, want) in table {
            assert_eq!(resume_plan(offset, total), want, "{offset}/{total}");
        }
    }

    /// Trap: an offset of 0 on COMMIT truncates an ingest that holds bytes (a shared blob then
    /// fails "size validation: 0 != N"); trap: data on COMMIT is appended a second time.
    #[test]
    fn commit_carries_the_full_offset_and_no_data() {
        let labels = HashMap::from([("k".to_owned(), "v".to_owned())]);
        let m = commit_msg("kip-sha256:ab", 827, "sha256:ab", labels.clone());
        assert_eq!(m.action, WriteAction::Commit as i32);
        assert_eq!(m.offset, 827);
        assert_eq!(m.total, 827);
        assert!(m.data.is_empty());
        assert_eq!(m.expected, "sha256:ab");
        assert_eq!(m.labels, labels);
    }

    #[test]
    fn body_chunks_are_cut_into_write_sized_slices() {
        let chunk = bytes::Bytes::from((0..=255u8).cycle().take(10).collect::<Vec<_>>());
        let parts: Vec<_> = slices(chunk.clone(), 4).collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [4, 4, 2]);
        assert_eq!(parts.concat(), chunk.to_vec());
        // The slices share the chunk's buffer.
        assert_eq!(parts[1].as_ptr(), chunk[4..].as_ptr());
        assert_eq!(slices(bytes::Bytes::new(), 4).count(), 0);
        assert_eq!(slices(chunk, 64).count(), 1);
    }

    #[test]
    fn writes_carry_their_offset_and_stat_carries_no_data() {
        let w = write_msg("r", 3 * MAX_WRITE as i64, vec![1, 2, 3]);
        assert_eq!(w.action, WriteAction::Write as i32);
        assert_eq!(w.offset, 3 * MAX_WRITE as i64);
        assert_eq!(w.data, vec![1, 2, 3]);
        let s = stat_msg("r", 10, "sha256:x");
        assert_eq!(s.action, WriteAction::Stat as i32);
        assert_eq!((s.total, s.offset, s.data.len()), (10, 0, 0));
        assert_eq!(ingest_ref("sha256:x"), "kip-sha256:x");
    }
}
