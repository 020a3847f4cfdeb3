//! `--handover-smtp ADDR`: the handover of a foreign buffer that has no pull API but relays each
//! request by SMTP to a back office. This sink is that back office: every mail it receives becomes
//! a line of `handed.jsonl` with `source: "smtp"`. The buffer gives no seq, so the order of delivery
//! stands in for it (`seq` = 1, 2, 3… in order of arrival, `seq_is_order: true`), and requests are
//! joined to what was sent by `X-Landrush-Id` and Message-ID.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use barrage::smtp::{Envelope, MessageHandler, Reply};
use reports::records::{HandedRecord, JsonlWriter, Stamp, handed_sha256};

use super::sink::SmtpSink;
use super::{Seen, parse_request_mail};

struct Writer {
    out: JsonlWriter<HandedRecord>,
    delivered: u64,
}

/// Records every request mail relayed to it, numbering them in order of delivery.
pub struct HandoverRecorder {
    out: Mutex<Writer>,
    /// X-Landrush-Id and Message-ID of every request received.
    pub seen: Arc<Seen>,
}

impl HandoverRecorder {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        Ok(HandoverRecorder {
            out: Mutex::new(Writer {
                out: JsonlWriter::create(path)?,
                delivered: 0,
            }),
            seen: Arc::new(Seen::default()),
        })
    }

    pub fn flush(&self) -> anyhow::Result<()> {
        self.out
            .lock()
            .expect("handover writer poisoned")
            .out
            .flush()
    }

    fn record(&self, envelope: &Envelope, message: &[u8]) -> anyhow::Result<()> {
        let mail = parse_request_mail(message);
        let handed_at = Stamp::now();
        // Numbered under the lock, so the file's order and the seqs agree.
        let mut writer = self.out.lock().expect("handover writer poisoned");
        writer.delivered += 1;
        let record = HandedRecord {
            seq: writer.delivered,
            seq_is_order: true,
            accepted_at: None,
            message_id: mail.message_id,
            landrush_id: mail.landrush_id,
            domain: mail.domain,
            sender: Some(envelope.mail_from.clone()),
            handed_at,
            source: "smtp".into(),
            raw_sha256: Some(handed_sha256(message)),
        };
        self.seen
            .note([record.landrush_id.as_deref(), record.message_id.as_deref()]);
        writer.out.write(&record)
    }
}

impl MessageHandler for HandoverRecorder {
    async fn deliver(&self, envelope: &Envelope, message: Vec<u8>) -> Reply {
        match self.record(envelope, &message) {
            Ok(()) => Reply::new(250, [2, 0, 0], "handed over"),
            Err(e) => {
                tracing::error!("handover sink cannot record: {e:#}");
                Reply::new(451, [4, 3, 0], "handover sink cannot record, try again")
            }
        }
    }
}

/// The SMTP handover sink.
pub type HandoverSink = SmtpSink<HandoverRecorder>;

/// Starts an SMTP handover sink on `bind`, recording into `handed_path`.
pub async fn start(bind: SocketAddr, handed_path: &Path) -> anyhow::Result<HandoverSink> {
    SmtpSink::start(bind, Arc::new(HandoverRecorder::create(handed_path)?)).await
}
