//! The real terminal: raw mode and the alternate screen, the event loop,
//! and putting the terminal back however the loop ends.
//!
//! The loop never waits on the producer: each turn it takes what is
//! already queued (a bounded number), draws if anything changed, then
//! waits for a key at most [`TICK`] (or until the replay's next sample).
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyEventKind};
use tokio::sync::mpsc::{error::TryRecvError, Receiver};

use super::{
    app::{Action, App},
    record::Recorder,
    TuiError, TuiExit, TuiOptions, Update,
};

/// Longest wait for a key before looking at the channel again: new samples
/// show within this.
const TICK: Duration = Duration::from_millis(100);

/// Updates taken per turn: a burst cannot starve the keys.
const MAX_DRAIN: usize = 256;

/// Whether a feed may still bring updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FeedState {
    /// More may come.
    Open,
    /// Nothing more will come (the producer is gone, the recording played
    /// to its end).
    Ended,
}

/// Where updates come from: the shipper's channel or a recording.
pub(crate) trait Feed {
    /// Moves the updates due at `now` into `out`.
    fn poll(&mut self, now: Instant, out: &mut Vec<Update>) -> FeedState;
    /// When the next update is due (`None`: unknown, poll every tick).
    fn next_due(&self) -> Option<Instant>;
    /// Acts on the player's keys (play/pause, seek); may redo `app`.
    fn act(&mut self, action: Action, now: Instant, app: &mut App);
    /// Shows the feed's own state (the replay's position) in `app`.
    fn sync(&self, _app: &mut App) {}
    /// What the footer says once the feed ended.
    fn end_message(&self) -> &'static str;
}

/// The shipper's channel.
pub(crate) struct Live(pub(crate) Receiver<Update>);

impl Feed for Live {
    fn poll(&mut self, _now: Instant, out: &mut Vec<Update>) -> FeedState {
        for _ in 0..MAX_DRAIN {
            match self.0.try_recv() {
                Ok(u) => out.push(u),
                Err(TryRecvError::Empty) => return FeedState::Open,
                Err(TryRecvError::Disconnected) => return FeedState::Ended,
            }
        }
        FeedState::Open
    }

    fn next_due(&self) -> Option<Instant> {
        None
    }

    fn act(&mut self, _action: Action, _now: Instant, _app: &mut App) {}

    fn end_message(&self) -> &'static str {
        "the shipper stopped: no more samples"
    }
}

/// Runs the screen on the updates from `updates` until `q` (or Ctrl-C).
///
/// Blocking: call it from `tokio::task::spawn_blocking` or a thread of its
/// own. The producer should `try_send` and drop an update when the channel
/// is full, so that collection never waits for the screen. When the
/// channel closes, the screen says so and waits for `q` (unless
/// [`TuiOptions::exit_when_closed`]). The terminal is restored on return,
/// on error and on panic.
pub fn run(updates: Receiver<Update>, opts: TuiOptions) -> Result<TuiExit, TuiError> {
    run_feed(Live(updates), App::new(), &opts)
}

/// Puts the terminal back when dropped armed (an error return or
/// unwinding); a normal return disarms it and restores with its error
/// reported.
struct Restore {
    armed: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.armed {
            ratatui::restore();
        }
    }
}

fn toggle_record(rec: &mut Recorder, app: &mut App) {
    match rec.toggle() {
        Ok(path) => {
            app.set_recording(path);
            app.set_notice(None);
        }
        Err(e) => {
            app.set_recording(None);
            app.set_notice(Some(e.to_string()));
        }
    }
}

/// Polls `feed` into `batch` and pushes what came into `app` (and the
/// recording); its state, and whether anything came.
fn take_updates(
    feed: &mut impl Feed,
    app: &mut App,
    rec: &mut Recorder,
    batch: &mut Vec<Update>,
) -> (FeedState, bool) {
    let state = feed.poll(Instant::now(), batch);
    let updated = !batch.is_empty();
    for u in batch.drain(..) {
        if let Err(e) = rec.write(&u.sample) {
            app.set_recording(None);
            app.set_notice(Some(e.to_string()));
        }
        app.push(u);
    }
    (state, updated)
}

/// What a terminal event asks of the loop.
enum Step {
    /// The user quit.
    Quit,
    /// The screen must be drawn again.
    Redraw,
    /// Nothing changed.
    Nothing,
}

/// A key goes to the app (and what it asks for to the recorder or the
/// feed); a resize redraws.
fn handle_event(event: Event, feed: &mut impl Feed, app: &mut App, rec: &mut Recorder) -> Step {
    match event {
        Event::Key(key) if key.kind != KeyEventKind::Release => {
            match app.handle_key(key) {
                Action::Quit => return Step::Quit,
                Action::ToggleRecord => toggle_record(rec, app),
                a @ (Action::TogglePlay | Action::Seek(_)) => feed.act(a, Instant::now(), app),
                Action::None => {}
            }
            Step::Redraw
        }
        Event::Resize(..) => Step::Redraw,
        _ => Step::Nothing,
    }
}

/// The loop behind [`run`] and the replay.
pub(crate) fn run_feed(
    mut feed: impl Feed,
    mut app: App,
    opts: &TuiOptions,
) -> Result<TuiExit, TuiError> {
    // Installs a panic hook that restores the terminal before the message.
    let mut terminal = ratatui::try_init()?;
    let mut restore = Restore { armed: true };
    let mut rec = Recorder::new(&opts.record_to);
    if opts.record_now {
        toggle_record(&mut rec, &mut app);
    }
    let mut dirty = true;
    let mut ended = false;
    let mut batch = Vec::new();
    let quit_by_user = loop {
        let (state, updated) = take_updates(&mut feed, &mut app, &mut rec, &mut batch);
        dirty |= updated;
        feed.sync(&mut app);
        match (state, ended) {
            (FeedState::Ended, false) => {
                if opts.exit_when_closed {
                    break false;
                }
                app.set_ended(feed.end_message());
                ended = true;
                dirty = true;
            }
            (FeedState::Open, true) => {
                app.ended = None;
                ended = false;
                dirty = true;
            }
            _ => {}
        }
        if dirty {
            terminal.draw(|f| app.render(f))?;
            dirty = false;
        }
        let wait = feed
            .next_due()
            .map_or(TICK, |due| due.saturating_duration_since(Instant::now()))
            .min(TICK);
        if !event::poll(wait)? {
            continue;
        }
        match handle_event(event::read()?, &mut feed, &mut app, &mut rec) {
            Step::Quit => break true,
            Step::Redraw => dirty = true,
            Step::Nothing => {}
        }
    };
    let stopped = rec.stop();
    drop(terminal);
    restore.armed = false;
    ratatui::try_restore()?;
    if let Err(e) = stopped {
        eprintln!("{e}");
    }
    Ok(TuiExit {
        quit_by_user,
        recordings: rec.files().to_vec(),
    })
}
