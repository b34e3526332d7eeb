//! A whole transfer through the protocol's machines on a simulated link,
//! in the way quinn-proto's test `Pair` works: no sockets, no threads, a
//! clock the simulation advances, so timing rules (the window, acks,
//! keepalives, the sender's patience) are tested exactly and at once.
//!
//! The sender is [`SendMachine`] with an honest stream of the offer's
//! chunks; the receiver is [`ReceiveMachine`] with [`AckSchedule`] ticking
//! every [`ACK_INTERVAL`]. Frames are encoded and decoded as on a real
//! channel. The link has a one-way latency and a bandwidth (frames queue
//! behind each other), and can drop or swap data frames; the receiver's
//! disk can stop writing after some bytes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use tallow_protocol::limits::{Deadlines, ACK_INTERVAL, KEEPALIVE_INTERVAL};
use tallow_protocol::machine::{
    AckSchedule, Decision, Incoming, PeerMisbehaved, ReceiveMachine, Reply, SendMachine,
};
use tallow_protocol::manifest::Manifest;
use tallow_protocol::message::{ChunkHeader, FileRuns, Message, ResumePoint};
use tallow_protocol::wire::{Decode, Encode};

/// The simulated link and what goes wrong on it.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// One way.
    pub latency: Duration,
    /// Sender to receiver, in bytes per second.
    pub bytes_per_sec: u64,
    /// Data frames (chunks, counted from 0) the link loses.
    pub drop_frame: Option<usize>,
    /// A data frame the link delivers after the one behind it.
    pub swap_frame: Option<usize>,
    /// The receiver's disk writes this many bytes, then nothing more.
    pub disk_stops_after: Option<u64>,
}

impl Link {
    /// A clean link.
    pub fn new(latency: Duration, bytes_per_sec: u64) -> Self {
        Link {
            latency,
            bytes_per_sec,
            drop_frame: None,
            swap_frame: None,
            disk_stops_after: None,
        }
    }
}

/// How a simulated transfer ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The sender heard `Done`.
    Done,
    /// The receiver refused the stream.
    ReceiverRefused(PeerMisbehaved),
    /// The sender refused a reply.
    SenderRefused(PeerMisbehaved),
    /// The sender gave up waiting for the receiver.
    SenderTimedOut,
}

/// What happened, in simulated time.
#[derive(Debug)]
pub struct Outcome {
    /// How it ended.
    pub ending: Ending,
    /// When, from the start.
    pub elapsed: Duration,
    /// Most bytes ever sent and not yet acknowledged.
    pub peak_unacked: u64,
    /// Acks the receiver sent.
    pub acks: usize,
}

enum Event {
    /// A frame reaches the receiver.
    AtReceiver(Vec<u8>),
    /// A frame reaches the sender.
    AtSender(Vec<u8>),
    /// The receiver's ack timer.
    Tick,
}

/// Send `manifest` (all of it, from the start) with `window` over `link`;
/// the sender gives up after `deadlines.idle` of silence while it waits.
pub fn transfer(manifest: &Manifest, window: u64, link: Link, deadlines: Deadlines) -> Outcome {
    Sim::new(manifest, window, link, deadlines).run()
}

struct Sim<'m> {
    manifest: &'m Manifest,
    link: Link,
    idle: Duration,
    start: Instant,
    now: Duration,
    /// Events by time, then by the order they were made.
    events: BinaryHeap<Reverse<(Duration, u64)>>,
    payloads: HashMap<u64, Event>,
    next_id: u64,
    /// When the link is free for the next frame.
    link_free: Duration,
    sender: SendMachine,
    stream: HonestStream<'m>,
    data_frames: usize,
    held: Option<(Vec<u8>, Duration)>,
    receiver: ReceiveMachine<'m>,
    acks: AckSchedule,
    written: u64,
    acks_sent: usize,
    peak_unacked: u64,
    accepted: bool,
    sent: u64,
    acked: u64,
}

impl<'m> Sim<'m> {
    fn new(manifest: &'m Manifest, window: u64, link: Link, deadlines: Deadlines) -> Self {
        let start = Instant::now();
        let mut sim = Sim {
            manifest,
            link,
            idle: deadlines.idle,
            start,
            now: Duration::ZERO,
            events: BinaryHeap::new(),
            payloads: Default::default(),
            next_id: 0,
            link_free: Duration::ZERO,
            sender: SendMachine::new(manifest.total_size(), window, start),
            stream: HonestStream::new(manifest),
            data_frames: 0,
            held: None,
            receiver: ReceiveMachine::new(manifest, ResumePoint::default(), FileRuns::default()),
            acks: AckSchedule::new(start, KEEPALIVE_INTERVAL, deadlines.disk_stall()),
            written: 0,
            acks_sent: 0,
            peak_unacked: 0,
            accepted: false,
            sent: 0,
            acked: 0,
        };
        // The offer is out; the receiver accepts as it arrives.
        let accept = Message::Accept {
            resume: ResumePoint::default(),
            skip: FileRuns::default(),
        };
        sim.at(link.latency * 2, Event::AtSender(accept.to_bytes()));
        sim.at(link.latency + ACK_INTERVAL, Event::Tick);
        sim
    }

    fn at(&mut self, when: Duration, event: Event) {
        let id = self.next_id;
        self.next_id += 1;
        self.events.push(Reverse((when, id)));
        self.payloads.insert(id, event);
    }

    fn instant(&self) -> Instant {
        self.start + self.now
    }

    fn end(&self, ending: Ending) -> Outcome {
        Outcome {
            ending,
            elapsed: self.now,
            peak_unacked: self.peak_unacked,
            acks: self.acks_sent,
        }
    }

    fn run(mut self) -> Outcome {
        loop {
            let deadline = self
                .sender
                .reply_deadline(self.idle)
                .map(|at| at.saturating_duration_since(self.start));
            // The receiver's timer runs until the stream is complete, and
            // Done follows it, so there is always a next event.
            let Some(Reverse((when, id))) = self.events.pop() else {
                panic!("the simulation stopped with nothing in flight");
            };
            if let Some(deadline) = deadline.filter(|d| *d < when) {
                self.now = deadline;
                return self.end(Ending::SenderTimedOut);
            }
            self.now = when;
            let Some(event) = self.payloads.remove(&id) else {
                continue;
            };
            match event {
                Event::AtSender(frame) => {
                    if let Some(ending) = self.sender_hears(&frame) {
                        return self.end(ending);
                    }
                    self.send_what_the_window_allows();
                }
                Event::AtReceiver(frame) => {
                    if let Some(ending) = self.receiver_hears(&frame) {
                        return self.end(ending);
                    }
                }
                Event::Tick => {
                    if let Some(ack) = self
                        .acks
                        .on_tick(self.instant(), self.written, self.written)
                    {
                        self.acks_sent += 1;
                        self.at(
                            self.now + self.link.latency,
                            Event::AtSender(ack.to_bytes()),
                        );
                    }
                    if !self.receiver.is_complete() {
                        self.at(self.now + ACK_INTERVAL, Event::Tick);
                    }
                }
            }
        }
    }

    fn sender_hears(&mut self, frame: &[u8]) -> Option<Ending> {
        let msg = Message::decode_all(frame).expect("the simulated receiver is honest");
        let now = self.instant();
        if !self.accepted {
            return match self.sender.on_decision(self.manifest, msg, now) {
                Ok(Decision::Accepted { .. }) => {
                    self.accepted = true;
                    None
                }
                Ok(other) => panic!("the simulated receiver accepts, not {other:?}"),
                Err(e) => Some(Ending::SenderRefused(e)),
            };
        }
        match self.sender.on_reply(msg, now) {
            Ok(Reply::Acked(bytes)) => {
                self.acked = bytes;
                None
            }
            Ok(Reply::Done) => Some(Ending::Done),
            Ok(other) => panic!("the simulated receiver does not abort: {other:?}"),
            Err(e) => Some(Ending::SenderRefused(e)),
        }
    }

    fn send_what_the_window_allows(&mut self) {
        while self.sender.window_open() {
            let Some((frame, data_len, last)) = self.stream.next_frame() else {
                return;
            };
            self.sender.on_sent(data_len, last, self.instant());
            self.sent += data_len;
            self.peak_unacked = self.peak_unacked.max(self.sent - self.acked);
            let on_wire =
                Duration::from_secs_f64(frame.len() as f64 / self.link.bytes_per_sec as f64);
            let departs = self.link_free.max(self.now);
            self.link_free = departs + on_wire;
            let arrives = self.link_free + self.link.latency;
            let index = self.data_frames;
            if data_len > 0 {
                self.data_frames += 1;
            }
            if data_len > 0 && self.link.drop_frame == Some(index) {
                continue;
            }
            if data_len > 0 && self.link.swap_frame == Some(index) {
                self.held = Some((frame, arrives));
                continue;
            }
            self.at(arrives, Event::AtReceiver(frame));
            if let Some((held, _)) = self.held.take() {
                self.at(arrives, Event::AtReceiver(held));
            }
        }
    }

    fn receiver_hears(&mut self, frame: &[u8]) -> Option<Ending> {
        let msg = Message::decode_all(frame).expect("the simulated sender is honest");
        match self.receiver.on_message(msg) {
            Ok(Incoming::Chunk { len, .. }) => {
                let limit = self.link.disk_stops_after.unwrap_or(u64::MAX);
                self.written = (self.written + len as u64).min(limit);
                None
            }
            Ok(Incoming::Complete { .. }) => {
                // The last ack, then Done, as the receiver's ack task does.
                let last = Message::Ack {
                    bytes: self.written,
                };
                self.acks_sent += 1;
                self.at(
                    self.now + self.link.latency,
                    Event::AtSender(last.to_bytes()),
                );
                self.at(
                    self.now + self.link.latency,
                    Event::AtSender(Message::Done.to_bytes()),
                );
                None
            }
            Ok(_) => None,
            Err(e) => Some(Ending::ReceiverRefused(e)),
        }
    }
}

/// The frames an honest sender sends for `manifest`, made as they are
/// needed: each with the plaintext bytes it carries and whether it is the
/// last.
struct HonestStream<'m> {
    manifest: &'m Manifest,
    zeros: Vec<u8>,
    file: usize,
    chunk: u64,
    finished: bool,
}

impl<'m> HonestStream<'m> {
    fn new(manifest: &'m Manifest) -> Self {
        HonestStream {
            manifest,
            zeros: vec![0u8; manifest.chunk_size as usize],
            file: 0,
            chunk: 0,
            finished: false,
        }
    }

    fn next_frame(&mut self) -> Option<(Vec<u8>, u64, bool)> {
        if self.finished {
            return None;
        }
        let Some(entry) = self.manifest.files.get(self.file) else {
            self.finished = true;
            let complete = Message::TransferComplete {
                merkle_root: [0; 32],
            };
            return Some((complete.to_bytes(), 0, true));
        };
        let file = self.file as u32;
        if self.chunk < self.manifest.chunk_count(entry.size) {
            let index = self.chunk;
            self.chunk += 1;
            let len = self.manifest.chunk_len(entry.size, index);
            let chunk = Message::Chunk {
                header: ChunkHeader {
                    file,
                    index,
                    compressed: false,
                    leaf: [0; 32],
                },
                data: &self.zeros[..len as usize],
            };
            return Some((chunk.to_bytes(), len, false));
        }
        self.file += 1;
        self.chunk = 0;
        let end = Message::FileEnd {
            file,
            hash: [0; 32],
        };
        Some((end.to_bytes(), 0, false))
    }
}
