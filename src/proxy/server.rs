//! The client side of the proxy: one HTTP/1.1 connection served with the proxy's own codec —
//! read a request head (within the header timeout and size limit: a slow client is cut, an
//! oversized head gets `431`), hand it to the [`Forwarder`], which answers on the connection,
//! and go on while both sides keep the connection alive. On shutdown an idle connection closes
//! at once and one in the middle of a request gets the grace period to finish it.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::codec;
use super::connection::{ClientConn, ClientIo, ReadError};
use super::forward::ConnectionContext;
use super::pages;

/// Serves one client connection until it closes, a side wants it closed, or `shutdown` fires.
pub async fn serve_connection<I>(io: I, context: Arc<ConnectionContext>, shutdown: &mut oneshot::Receiver<()>)
where
    I: ClientIo,
{
    let options = &context.forwarder.options;
    let mut conn = ClientConn::new(io, &context.buffers);
    loop {
        // Between requests the connection holds no buffer: an idle keep-alive client costs
        // its socket and this task, about a kilobyte.
        conn.release_buffers();
        let read = tokio::select! {
            biased;
            _ = &mut *shutdown => return,
            read = tokio::time::timeout(options.client_header_timeout, conn.read_head(options.max_header_bytes)) => read,
        };
        let head = match read {
            Ok(Ok(Some(head))) => head,
            // Idle past the header timeout, or closed by the client: nothing to answer.
            Err(_) | Ok(Ok(None)) => return,
            Ok(Err(ReadError::Io(error))) => {
                tracing::debug!(%error, "a client connection broke off in the middle of a request head");
                return;
            }
            Ok(Err(ReadError::TooLarge)) => {
                refuse(&mut conn, pages::header_too_large()).await;
                return;
            }
            Ok(Err(ReadError::Malformed)) => {
                refuse(&mut conn, pages::malformed()).await;
                return;
            }
        };
        let keep_alive = {
            // Boxed: the request's state machine is allocated while a request is in flight,
            // not kept in every idle connection's task.
            let mut handling = Box::pin(context.forwarder.handle(&context, &mut conn, head));
            tokio::select! {
                biased;
                keep_alive = &mut handling => keep_alive,
                _ = &mut *shutdown => {
                    // Finish the request in progress, then close; one that runs past the grace
                    // period is cut.
                    let _ = tokio::time::timeout(options.shutdown_grace, &mut handling).await;
                    return;
                }
            }
        };
        if !keep_alive {
            break;
        }
    }
    let _ = conn.io.shutdown().await;
}

/// Answers a request that could not be read with `page`, and closes.
async fn refuse<I>(conn: &mut ClientConn<'_, I>, page: pages::Page)
where
    I: ClientIo,
{
    page.write(conn.out(), false, codec::ClientConnection::Close);
    let _ = conn.flush_out().await;
    let _ = conn.io.shutdown().await;
}
