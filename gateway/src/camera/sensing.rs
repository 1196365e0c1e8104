//! Tamper and motion sensing on small greyscale pictures ([`Thumb`]) of decoded keyframes.
//!
//! Pure logic with an injected clock: the decoder hands in a thumb, the time and how much the
//! stream carried between keyframes; the [`Sensor`] says which conditions were raised or
//! cleared. Nothing here touches video, so every rule is tested without a camera.

use std::time::Duration;

use firmware_config::config::gateway::{parse_hhmm, MotionZone, Schedule, Sensing};
use firmware_config::runtime::clock::Instant;
use serde::Serialize;
use time::{OffsetDateTime, Weekday};

/// Width of a thumb in pixels; its height keeps the picture's aspect ratio.
pub const THUMB_WIDTH: usize = 128;

/// A small greyscale copy of a picture, each pixel the mean of its area (which averages
/// sensor noise away).
#[derive(Debug, Clone, PartialEq)]
pub struct Thumb {
    pub width: usize,
    pub height: usize,
    pub luma: Vec<u8>,
}

impl Thumb {
    /// Height of a thumb for a `width`×`height` picture.
    pub fn height_for(width: u32, height: u32) -> usize {
        let h = (THUMB_WIDTH as f64 * f64::from(height) / f64::from(width.max(1))).round();
        (h as usize).clamp(8, 4 * THUMB_WIDTH)
    }

    fn mean_std(&self) -> (f64, f64) {
        let n = self.luma.len().max(1) as f64;
        let mean = self.luma.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = self
            .luma
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    /// Mean absolute difference of neighbouring pixels: how much detail the picture has.
    fn detail(&self) -> f64 {
        let (w, h) = (self.width, self.height);
        if w < 2 || h < 2 || self.luma.len() != w * h {
            return 0.0;
        }
        let mut sum = 0u64;
        for y in 0..h - 1 {
            for x in 0..w - 1 {
                let p = self.luma[y * w + x];
                sum += u64::from(p.abs_diff(self.luma[y * w + x + 1]));
                sum += u64::from(p.abs_diff(self.luma[(y + 1) * w + x]));
            }
        }
        sum as f64 / (2 * (w - 1) * (h - 1)) as f64
    }

    fn same_shape(&self, other: &Thumb) -> bool {
        self.width == other.width
            && self.height == other.height
            && self.luma.len() == other.luma.len()
    }
}

/// Normalised cross-correlation of two equally long signals, -1..1; 0 when either is flat.
fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()).max(1) as f64;
    let ma = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let mb = b.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
        ab += dx * dy;
        aa += dx * dx;
        bb += dy * dy;
    }
    if aa < 1e-6 || bb < 1e-6 {
        return 0.0;
    }
    ab / (aa * bb).sqrt()
}

/// What the stream carried between two decoded keyframes, without decoding it: a camera
/// whose picture froze sends nearly empty frames between keyframes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Between {
    pub inter_frames: u64,
    pub inter_bytes: u64,
    /// Pixels of the picture (set once it is decoded).
    pub pixels: u64,
}

impl Between {
    /// Mean size of a frame between keyframes per megapixel; `None` when every frame is a
    /// keyframe.
    fn inter_bytes_per_mpx(&self) -> Option<f64> {
        (self.inter_frames > 0 && self.pixels > 0).then(|| {
            self.inter_bytes as f64 / self.inter_frames as f64 / (self.pixels as f64 / 1e6)
        })
    }
}

/// The rules a [`Sensor`] applies.
pub use firmware_config::kinds::SensingRule as Rule;

/// A condition raised or cleared by one observation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule: Rule,
    /// The motion zone, for motion.
    pub zone: Option<String>,
    pub raised: bool,
    /// The figure that decided it (see [`Measures`]).
    pub measure: f64,
}

/// The figures of the last observation, for logs and the camera's health.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Measures {
    pub mean_luma: f64,
    pub luma_spread: f64,
    pub detail: f64,
    /// Mean absolute change from the previous thumb.
    pub change: Option<f64>,
    /// Mean size of the frames between keyframes, bytes per megapixel.
    pub inter_bytes_per_mpx: Option<f64>,
    /// Correlation with the learnt scene, 1 = same view.
    pub scene_match: Option<f64>,
}

/// Below these a picture is uniform: a lens cap, a hand, a black or blank signal.
const COVERED_SPREAD: f64 = 6.0;
const COVERED_DETAIL: f64 = 1.5;
/// At most this mean change between keyframes, and frames between them this small: the
/// picture stands. A live sensor's noise alone costs a quiet 1080p scene several KB a frame;
/// an encoder repeating one picture sends a few hundred bytes.
const FROZEN_CHANGE: f64 = 0.75;
const FROZEN_INTER_BYTES_PER_MPX: f64 = 2000.0;
/// Below this correlation with the learnt scene the view is a different one.
const MOVED_MATCH: f64 = 0.45;
/// Above it the scene is the same and slowly learnt (lighting drifts over a day).
const SCENE_LEARN_MATCH: f64 = 0.75;
const SCENE_LEARN_RATE: f32 = 0.05;
/// A thumb pixel counts as changed when it moves this many grey levels.
const MOTION_LEVELS: u8 = 18;
/// When more of the whole picture changes than this, the light or the view changed: that is
/// not motion in a zone.
const GLOBAL_CHANGE: f64 = 0.5;

/// A condition that must hold for `raise_after` to be raised and be absent for `clear_after`
/// to be cleared: a hold-down against flapping.
#[derive(Debug, Default)]
struct Condition {
    raised: bool,
    /// Since when the observations disagree with `raised`.
    since: Option<Instant>,
}

impl Condition {
    fn observe(
        &mut self,
        now: Instant,
        active: bool,
        raise_after: Duration,
        clear_after: Duration,
    ) -> Option<bool> {
        if active == self.raised {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        let wait = if active { raise_after } else { clear_after };
        if now.duration_since(since) >= wait {
            self.raised = active;
            self.since = None;
            return Some(active);
        }
        None
    }
}

/// A motion zone as a mask over thumb pixels.
#[derive(Debug)]
struct Zone {
    config: MotionZone,
    /// (width, height) the mask was made for, and the indices of the pixels inside.
    mask: Option<((usize, usize), Vec<usize>)>,
    condition: Condition,
}

impl Zone {
    fn pixels(&mut self, width: usize, height: usize) -> &[usize] {
        let fresh = matches!(&self.mask, Some((shape, _)) if *shape == (width, height));
        if !fresh {
            let mut inside = Vec::new();
            for y in 0..height {
                for x in 0..width {
                    let px = (x as f64 + 0.5) / width as f64;
                    let py = (y as f64 + 0.5) / height as f64;
                    if point_in_polygon(px, py, &self.config.polygon) {
                        inside.push(y * width + x);
                    }
                }
            }
            self.mask = Some(((width, height), inside));
        }
        self.mask.as_ref().map(|(_, m)| m.as_slice()).unwrap_or(&[])
    }
}

/// Even-odd rule.
fn point_in_polygon(x: f64, y: f64, polygon: &[[f64; 2]]) -> bool {
    let mut inside = false;
    let n = polygon.len();
    for i in 0..n {
        let [xi, yi] = polygon[i];
        let [xj, yj] = polygon[(i + n - 1) % n];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
    }
    inside
}

/// Whether `at` (in the site's local time) falls in the schedule.
pub fn in_schedule(schedule: &Schedule, at: OffsetDateTime) -> bool {
    let (Some(from), Some(to)) = (parse_hhmm(&schedule.from), parse_hhmm(&schedule.to)) else {
        return false;
    };
    let minute = u16::from(at.hour()) * 60 + u16::from(at.minute());
    let day_ok = |d: Weekday| {
        let name = match d {
            Weekday::Monday => "mon",
            Weekday::Tuesday => "tue",
            Weekday::Wednesday => "wed",
            Weekday::Thursday => "thu",
            Weekday::Friday => "fri",
            Weekday::Saturday => "sat",
            Weekday::Sunday => "sun",
        };
        schedule.days.iter().any(|s| s == name)
    };
    if from < to {
        day_ok(at.weekday()) && (from..to).contains(&minute)
    } else {
        // Spans midnight: the part after midnight belongs to the day the window opened.
        (minute >= from && day_ok(at.weekday())) || (minute < to && day_ok(at.weekday().previous()))
    }
}

/// Tamper and motion sensing for one camera.
#[derive(Debug)]
pub struct Sensor {
    config: Sensing,
    zones: Vec<Zone>,
    previous: Option<Thumb>,
    /// The learnt view, block means of the thumb.
    scene: Option<Vec<f32>>,
    covered: Condition,
    frozen: Condition,
    moved: Condition,
    pub last: Measures,
}

impl Sensor {
    pub fn new(config: &Sensing) -> Self {
        Self {
            zones: config
                .motion_zones
                .iter()
                .map(|z| Zone {
                    config: z.clone(),
                    mask: None,
                    condition: Condition::default(),
                })
                .collect(),
            config: config.clone(),
            previous: None,
            scene: None,
            covered: Condition::default(),
            frozen: Condition::default(),
            moved: Condition::default(),
            last: Measures::default(),
        }
    }

    /// The stream restarted: the next picture is not compared with the last one before the
    /// gap (a reconnect is not motion); the learnt scene stays, to see a camera turned while
    /// it was away.
    pub fn restart(&mut self) {
        self.previous = None;
    }

    /// Whether any rule needs decoded pictures.
    pub fn active(&self) -> bool {
        self.config.covered || self.config.frozen || self.config.moved || !self.zones.is_empty()
    }

    /// Looks at one decoded keyframe taken at `now` (`local` in the site's time).
    pub fn observe(
        &mut self,
        now: Instant,
        local: OffsetDateTime,
        thumb: &Thumb,
        between: Between,
    ) -> Vec<Finding> {
        let hold = self.config.hold_down;
        let mut found = Vec::new();
        let (mean, spread) = thumb.mean_std();
        let detail = thumb.detail();
        let previous = self.previous.take().filter(|p| p.same_shape(thumb));
        let change = previous.as_ref().map(|p| {
            p.luma
                .iter()
                .zip(&thumb.luma)
                .map(|(a, b)| f64::from(a.abs_diff(*b)))
                .sum::<f64>()
                / thumb.luma.len().max(1) as f64
        });
        let inter = between.inter_bytes_per_mpx();
        self.last = Measures {
            mean_luma: mean,
            luma_spread: spread,
            detail,
            change,
            inter_bytes_per_mpx: inter,
            scene_match: None,
        };

        let covered = spread < COVERED_SPREAD && detail < COVERED_DETAIL;
        if self.config.covered {
            if let Some(r) = self.covered.observe(now, covered, hold, hold) {
                found.push(finding(Rule::Covered, None, r, spread));
            }
        }
        // A covered lens also stands still and looks like another scene: report it once.
        let stands = !covered
            && change.is_some_and(|c| c <= FROZEN_CHANGE)
            && inter.is_none_or(|r| r <= FROZEN_INTER_BYTES_PER_MPX);
        if self.config.frozen {
            if let Some(r) = self.frozen.observe(now, stands, hold, hold) {
                found.push(finding(Rule::Frozen, None, r, change.unwrap_or(0.0)));
            }
        }
        if self.config.moved && !covered {
            let blocks = block_means(thumb);
            match &mut self.scene {
                Some(scene) if scene.len() == blocks.len() => {
                    let m = correlation(scene, &blocks);
                    self.last.scene_match = Some(m);
                    if m >= SCENE_LEARN_MATCH {
                        for (s, b) in scene.iter_mut().zip(&blocks) {
                            *s += (b - *s) * SCENE_LEARN_RATE;
                        }
                    }
                    // One event per move: the new view becomes the scene at once.
                    if self
                        .moved
                        .observe(now, m < MOVED_MATCH, hold, Duration::ZERO)
                        == Some(true)
                    {
                        found.push(finding(Rule::Moved, None, true, m));
                        *scene = blocks;
                        self.moved = Condition::default();
                    }
                }
                _ => self.scene = Some(blocks),
            }
        }
        if let Some(prev) = &previous {
            let changed_all = prev
                .luma
                .iter()
                .zip(&thumb.luma)
                .filter(|(a, b)| a.abs_diff(**b) >= MOTION_LEVELS)
                .count() as f64
                / thumb.luma.len().max(1) as f64;
            let quiet = covered || stands || changed_all > GLOBAL_CHANGE;
            for zone in &mut self.zones {
                let watched = zone
                    .config
                    .schedule
                    .as_ref()
                    .is_none_or(|s| in_schedule(s, local));
                let pixels = zone.pixels(thumb.width, thumb.height);
                let moving = if pixels.is_empty() || quiet || !watched {
                    0.0
                } else {
                    let changed = pixels
                        .iter()
                        .filter(|&&i| prev.luma[i].abs_diff(thumb.luma[i]) >= MOTION_LEVELS)
                        .count();
                    changed as f64 / pixels.len() as f64
                };
                let active = watched && moving >= zone.config.threshold;
                // Motion is raised at once and cleared after a quiet hold-down.
                if let Some(r) = zone.condition.observe(now, active, Duration::ZERO, hold) {
                    found.push(finding(
                        Rule::Motion,
                        Some(zone.config.name.clone()),
                        r,
                        moving,
                    ));
                }
            }
        }
        self.previous = Some(thumb.clone());
        found
    }
}

fn finding(rule: Rule, zone: Option<String>, raised: bool, measure: f64) -> Finding {
    Finding {
        rule,
        zone,
        raised,
        measure: (measure * 1000.0).round() / 1000.0,
    }
}

/// Means of 8×8-pixel blocks: the scene's layout without its fine detail.
fn block_means(thumb: &Thumb) -> Vec<f32> {
    const B: usize = 8;
    let (bw, bh) = (thumb.width.div_ceil(B), thumb.height.div_ceil(B));
    let mut sums = vec![(0u32, 0u32); bw * bh];
    for y in 0..thumb.height {
        for x in 0..thumb.width {
            let s = &mut sums[(y / B) * bw + x / B];
            s.0 += u32::from(thumb.luma[y * thumb.width + x]);
            s.1 += 1;
        }
    }
    sums.iter()
        .map(|&(s, n)| s as f32 / n.max(1) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = THUMB_WIDTH;
    const H: usize = 72;

    fn thumb(f: impl Fn(usize, usize) -> u8) -> Thumb {
        let mut luma = Vec::with_capacity(W * H);
        for y in 0..H {
            for x in 0..W {
                luma.push(f(x, y));
            }
        }
        Thumb {
            width: W,
            height: H,
            luma,
        }
    }

    /// Vertical bars with a little noise that changes with `n`.
    fn scene(n: u32) -> Thumb {
        thumb(|x, y| {
            let bar = [200u8, 170, 140, 110, 80, 50, 30][x * 7 / W];
            let noise = ((x * 31 + y * 17 + n as usize * 13) % 5) as u8;
            bar + noise
        })
    }

    fn with_box(base: Thumb, bx: usize, by: usize) -> Thumb {
        let mut t = base;
        for y in by..(by + 10).min(H) {
            for x in bx..(bx + 10).min(W) {
                t.luma[y * W + x] = 255;
            }
        }
        t
    }

    /// A 1080p stream at 4 Mbit/s.
    fn live() -> Between {
        Between {
            inter_frames: 24,
            inter_bytes: 24 * 14_000,
            pixels: 1920 * 1080,
        }
    }

    /// A 1080p encoder repeating one picture.
    fn still() -> Between {
        Between {
            inter_frames: 24,
            inter_bytes: 24 * 250,
            pixels: 1920 * 1080,
        }
    }

    fn config(hold: u64, zones: Vec<MotionZone>) -> Sensing {
        Sensing {
            hold_down: Duration::from_secs(hold),
            motion_zones: zones,
            ..Sensing::default()
        }
    }

    fn zone(name: &str, polygon: Vec<[f64; 2]>, schedule: Option<Schedule>) -> MotionZone {
        MotionZone {
            name: name.into(),
            polygon,
            threshold: 0.02,
            schedule,
        }
    }

    /// Feeds one thumb a second for `secs` seconds and collects the findings.
    fn run(
        sensor: &mut Sensor,
        t0: Instant,
        from: u64,
        secs: u64,
        pic: impl Fn(u64) -> (Thumb, Between),
    ) -> Vec<Finding> {
        let local = OffsetDateTime::now_utc();
        let mut all = Vec::new();
        for s in from..from + secs {
            let (t, b) = pic(s);
            all.extend(sensor.observe(t0 + Duration::from_secs(s), local, &t, b));
        }
        all
    }

    fn raised(f: &[Finding], rule: Rule) -> usize {
        f.iter().filter(|x| x.rule == rule && x.raised).count()
    }

    #[test]
    fn a_live_static_scene_raises_nothing() {
        let mut s = Sensor::new(&config(
            5,
            vec![zone(
                "all",
                vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]],
                None,
            )],
        ));
        let f = run(&mut s, Instant::now(), 0, 600, |n| {
            (scene(n as u32), live())
        });
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn black_is_covered_after_the_hold_down_and_clears() {
        let mut s = Sensor::new(&config(5, vec![]));
        let t0 = Instant::now();
        let black = thumb(|_, _| 16);
        let f = run(&mut s, t0, 0, 5, |_| (black.clone(), still()));
        assert!(f.is_empty(), "raised before the hold-down: {f:?}");
        let f = run(&mut s, t0, 5, 10, |_| (black.clone(), still()));
        assert_eq!(raised(&f, Rule::Covered), 1, "{f:?}");
        assert_eq!(f.len(), 1, "covered alone, not frozen or moved: {f:?}");
        let f = run(&mut s, t0, 15, 10, |n| (scene(n as u32), live()));
        assert!(
            f.iter().any(|x| x.rule == Rule::Covered && !x.raised),
            "{f:?}"
        );
        assert_eq!(raised(&f, Rule::Moved), 0, "{f:?}");
    }

    #[test]
    fn a_standing_picture_is_frozen_but_a_live_one_is_not() {
        let mut s = Sensor::new(&config(5, vec![]));
        let t0 = Instant::now();
        let f = run(&mut s, t0, 0, 20, |_| (scene(0), still()));
        assert_eq!(raised(&f, Rule::Frozen), 1, "{f:?}");
        // Same picture but the stream carries data between keyframes: a live, quiet scene.
        let mut s = Sensor::new(&config(5, vec![]));
        let f = run(&mut s, t0, 0, 20, |_| (scene(0), live()));
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn a_different_view_is_reported_once_as_moved() {
        let mut s = Sensor::new(&config(5, vec![]));
        let t0 = Instant::now();
        assert!(run(&mut s, t0, 0, 10, |n| (scene(n as u32), live())).is_empty());
        // The camera turned: the bars now run the other way.
        let turned = |n: u64| {
            let mut t = scene(n as u32);
            t.luma.reverse();
            (t, live())
        };
        let f = run(&mut s, t0, 10, 60, turned);
        assert_eq!(raised(&f, Rule::Moved), 1, "{f:?}");
        assert_eq!(f.len(), 1, "{f:?}");
    }

    #[test]
    fn motion_in_a_zone_during_its_schedule_only() {
        let left = vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]];
        let right = vec![[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]];
        let now = OffsetDateTime::now_utc();
        let h = now.hour();
        let outside = Schedule {
            from: format!("{:02}:00", (h + 2) % 24),
            to: format!("{:02}:00", (h + 3) % 24),
            days: vec!["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .into_iter()
                .map(String::from)
                .collect(),
        };
        let mut s = Sensor::new(&config(
            3,
            vec![
                zone("left", left.clone(), None),
                zone("right", right, None),
                zone("left-later", left, Some(outside)),
            ],
        ));
        let t0 = Instant::now();
        // A box moving about in the left half.
        let f = run(&mut s, t0, 0, 30, |n| {
            (
                with_box(
                    scene(n as u32),
                    5 + (n as usize * 7) % 40,
                    10 + (n as usize * 5) % 40,
                ),
                live(),
            )
        });
        let zones: Vec<_> = f
            .iter()
            .filter(|x| x.raised)
            .map(|x| x.zone.clone().unwrap())
            .collect();
        assert_eq!(zones, vec!["left".to_owned()], "{f:?}");
        // It leaves: cleared after the hold-down, once.
        let f = run(&mut s, t0, 30, 10, |n| (scene(n as u32), live()));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(!f[0].raised && f[0].zone.as_deref() == Some("left"));
    }

    #[test]
    fn lights_switched_on_are_not_motion() {
        let all = vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
        let mut s = Sensor::new(&config(3, vec![zone("all", all, None)]));
        let t0 = Instant::now();
        let f = run(&mut s, t0, 0, 20, |n| {
            let mut t = scene(n as u32);
            if n >= 10 {
                t.luma.iter_mut().for_each(|v| *v = v.saturating_add(40));
            }
            (t, live())
        });
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn schedules_span_midnight_and_days() {
        let s = Schedule {
            from: "22:00".into(),
            to: "06:00".into(),
            days: vec!["fri".into()],
        };
        let fri_23 = time::macros::datetime!(2026-11-27 23:00 +08:00);
        let sat_05 = time::macros::datetime!(2026-11-28 05:59 +08:00);
        let sat_23 = time::macros::datetime!(2026-11-28 23:00 +08:00);
        let fri_12 = time::macros::datetime!(2026-11-27 12:00 +08:00);
        assert!(in_schedule(&s, fri_23) && in_schedule(&s, sat_05));
        assert!(!in_schedule(&s, sat_23) && !in_schedule(&s, fri_12));
    }

    #[test]
    fn conditions_hold_down_both_ways() {
        let t0 = Instant::now();
        let mut c = Condition::default();
        let d = Duration::from_secs(10);
        assert_eq!(c.observe(t0, true, d, d), None);
        assert_eq!(c.observe(t0 + Duration::from_secs(5), false, d, d), None);
        assert_eq!(c.observe(t0 + Duration::from_secs(6), true, d, d), None);
        assert_eq!(
            c.observe(t0 + Duration::from_secs(16), true, d, d),
            Some(true)
        );
        assert_eq!(c.observe(t0 + Duration::from_secs(20), false, d, d), None);
        assert_eq!(
            c.observe(t0 + Duration::from_secs(30), false, d, d),
            Some(false)
        );
    }
}
