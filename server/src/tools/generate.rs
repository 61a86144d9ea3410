//! Event generators (`weir gen`): Nexmark, tweets with hashtags, sensor readings and card payments,
//! written into streams through COPY, the same append path as INSERT.

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What a generator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Nexmark persons, auctions and bids (streams `person`, `auction`, `bid`).
    Nexmark,
    /// Tweets' hashtags, Zipf-distributed over a few thousand tags (stream `tweets`).
    Tweets,
    /// Readings of many devices, with spikes, drifts and dropouts (stream `sensors`).
    Sensors,
    /// Card payments with injected fraud (stream `transactions`).
    Transactions,
}

/// 2026-01-01 00:00:00 UTC in microseconds: where generated event time starts by default.
pub const BASE_MICROS: i64 = 1_767_225_600_000_000;

/// The streams a kind writes, with their CREATE STREAM statements.
pub fn streams(kind: Kind, name: Option<&str>) -> Vec<(String, String)> {
    let one = |default: &str, columns: &str, time: &str, key: &str| {
        let n = name.unwrap_or(default).to_string();
        let sql = format!(
            "CREATE STREAM IF NOT EXISTS {n} ({columns}, WATERMARK FOR {time} AS {time} - INTERVAL '2' SECOND) \
             WITH (partitions = 4, key = '{key}')"
        );
        vec![(n, sql)]
    };
    match kind {
        Kind::Nexmark => vec![
            (
                "person".into(),
                "CREATE STREAM IF NOT EXISTS person (id BIGINT, name VARCHAR, emailAddress VARCHAR, \
                 creditCard VARCHAR, city VARCHAR, state VARCHAR, dateTime TIMESTAMP, extra VARCHAR, \
                 WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND) WITH (partitions = 4, key = 'id')"
                    .into(),
            ),
            (
                "auction".into(),
                "CREATE STREAM IF NOT EXISTS auction (id BIGINT, itemName VARCHAR, description VARCHAR, \
                 initialBid BIGINT, reserve BIGINT, dateTime TIMESTAMP, expires TIMESTAMP, seller BIGINT, \
                 category BIGINT, extra VARCHAR, WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND) \
                 WITH (partitions = 4, key = 'seller')"
                    .into(),
            ),
            (
                "bid".into(),
                "CREATE STREAM IF NOT EXISTS bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
                 url VARCHAR, dateTime TIMESTAMP, extra VARCHAR, \
                 WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND) WITH (partitions = 4, key = 'auction')"
                    .into(),
            ),
        ],
        Kind::Tweets => one(
            "tweets",
            "tweet_id BIGINT, user_id BIGINT, hashtag TEXT, ts TIMESTAMP",
            "ts",
            "hashtag",
        ),
        Kind::Sensors => one(
            "sensors",
            "device_id BIGINT, reading DOUBLE, ts TIMESTAMP",
            "ts",
            "device_id",
        ),
        Kind::Transactions => one(
            "transactions",
            "card_id BIGINT, amount DOUBLE, country TEXT, merchant TEXT, ts TIMESTAMP",
            "ts",
            "card_id",
        ),
    }
}

fn timestamp(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let sub = micros.rem_euclid(1_000_000);
    match chrono::DateTime::from_timestamp(secs, (sub * 1000) as u32) {
        Some(t) => t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        None => "1970-01-01 00:00:00".into(),
    }
}

/// A deterministic event generator; rows come out as COPY text lines per stream.
#[derive(Debug)]
pub struct Generator {
    kind: Kind,
    rng: StdRng,
    /// Events made so far.
    pub count: u64,
    /// Event time of the next event, in microseconds.
    time: i64,
    /// Event time advance per event, in microseconds.
    step: f64,
    carry: f64,
    persons: u64,
    auctions: u64,
    tags: Vec<String>,
    /// Per device: (baseline, drift per reading).
    devices: Vec<(f64, f64)>,
    /// Per card: (home country, usual amount).
    cards: Vec<(usize, f64)>,
}

const COUNTRIES: &[&str] = &["DE", "FR", "US", "GB", "JP", "BR", "IN", "NG"];
const CITIES: &[&str] = &[
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const STATES: &[&str] = &["AZ", "CA", "ID", "OR", "WA", "WY"];
const CHANNELS: &[&str] = &["Google", "Facebook", "Baidu", "Apple"];

impl Generator {
    /// A generator starting at event time `start_micros`, advancing `step_micros` per event.
    pub fn new(kind: Kind, seed: u64, start_micros: i64, step_micros: f64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let tags = (0..3000).map(|i| format!("tag{i}")).collect();
        let devices = (0..1000)
            .map(|_| (rng.random_range(10.0..30.0), 0.0))
            .collect();
        let cards = (0..10_000)
            .map(|_| {
                (
                    rng.random_range(0..COUNTRIES.len()),
                    rng.random_range(5.0..200.0),
                )
            })
            .collect();
        Self {
            kind,
            rng,
            count: 0,
            time: start_micros,
            step: step_micros,
            carry: 0.0,
            persons: 0,
            auctions: 0,
            tags,
            devices,
            cards,
        }
    }

    fn advance(&mut self) -> i64 {
        let now = self.time;
        self.carry += self.step;
        let whole = self.carry.floor();
        self.carry -= whole;
        self.time += whole as i64;
        self.count += 1;
        now
    }

    /// A Zipf-like pick among `n`: rank r with probability proportional to 1/r.
    fn zipf(&mut self, n: usize) -> usize {
        // Inverse of the continuous CDF of 1/x over [1, n + 1).
        let u: f64 = self.rng.random();
        let r = ((n as f64 + 1.0).ln() * u).exp().floor() as usize;
        r.clamp(1, n) - 1
    }

    /// Makes `n` events and appends their rows, as COPY text lines, to `out` (one buffer per
    /// stream, in the order of [`streams`]).
    pub fn fill(&mut self, n: u64, out: &mut [String]) {
        for _ in 0..n {
            match self.kind {
                Kind::Nexmark => self.nexmark(out),
                Kind::Tweets => self.tweet(&mut out[0]),
                Kind::Sensors => self.sensor(&mut out[0]),
                Kind::Transactions => self.payment(&mut out[0]),
            }
        }
    }

    fn nexmark(&mut self, out: &mut [String]) {
        // The Nexmark mix: of every 50 events, 1 person, 3 auctions, 46 bids.
        let slot = self.count % 50;
        let t = self.advance();
        let at = timestamp(t);
        if slot == 0 || self.persons == 0 {
            let id = 1000 + self.persons;
            self.persons += 1;
            let city = CITIES[self.rng.random_range(0..CITIES.len())];
            let state = STATES[self.rng.random_range(0..STATES.len())];
            let _ = writeln!(
                out[0],
                "{id}\tperson{id}\tp{id}@example.com\t{:016}\t{city}\t{state}\t{at}\t",
                self.rng.random_range(0..10_000_000_000_000_000u64)
            );
        } else if slot <= 3 || self.auctions == 0 {
            let id = 1000 + self.auctions;
            self.auctions += 1;
            // Hot sellers: half the auctions come from the newest 100 persons.
            let seller = if self.rng.random_bool(0.5) {
                1000 + self
                    .persons
                    .saturating_sub(1 + self.rng.random_range(0..100.min(self.persons)))
            } else {
                1000 + self.rng.random_range(0..self.persons)
            };
            let initial = self.rng.random_range(1..1000u64);
            let expires = timestamp(t + self.rng.random_range(10_000_000..60_000_000i64));
            let _ = writeln!(
                out[1],
                "{id}\titem{id}\tdescription of {id}\t{initial}\t{}\t{at}\t{expires}\t{seller}\t{}\t",
                initial * 2,
                10 + self.rng.random_range(0..5u64)
            );
        } else {
            // Hot auctions and bidders: most bids go to the newest auctions.
            let auction = if self.rng.random_bool(0.9) {
                1000 + self
                    .auctions
                    .saturating_sub(1 + self.rng.random_range(0..100.min(self.auctions)))
            } else {
                1000 + self.rng.random_range(0..self.auctions)
            };
            let bidder = 1000 + self.rng.random_range(0..self.persons);
            // Log-uniform prices between 1 and 100 000.
            let price = (self.rng.random_range(0.0..(100_000f64).ln())).exp() as u64;
            let channel = CHANNELS[self.rng.random_range(0..CHANNELS.len())];
            // Bounded disorder: a bid's time may lag the newest event by up to 2 ms.
            let lag = self.rng.random_range(0..2000i64);
            let _ = writeln!(
                out[2],
                "{auction}\t{bidder}\t{price}\t{channel}\thttps://www.nexmark.com/{auction}\t{}\t",
                timestamp(t - lag)
            );
        }
    }

    fn tweet(&mut self, out: &mut String) {
        let t = self.advance();
        let id = self.count;
        let user = self.rng.random_range(0..100_000u64);
        // One to three hashtags per tweet.
        for _ in 0..self.rng.random_range(1..=3) {
            let tag = self.zipf(self.tags.len());
            let _ = writeln!(out, "{id}\t{user}\t#{}\t{}", self.tags[tag], timestamp(t));
        }
    }

    fn sensor(&mut self, out: &mut String) {
        let t = self.advance();
        let device = self.rng.random_range(0..self.devices.len());
        // Dropouts: 1% of readings are lost.
        if self.rng.random_bool(0.01) {
            return;
        }
        let (base, drift) = &mut self.devices[device];
        // Drifts start now and then and grow slowly.
        if *drift == 0.0 && self.rng.random_bool(0.0005) {
            *drift = 0.01;
        }
        *base += *drift;
        let mut reading = *base + self.rng.random_range(-0.5..0.5);
        // Spikes: 0.2% of readings jump far off.
        if self.rng.random_bool(0.002) {
            reading += self.rng.random_range(50.0..100.0);
        }
        let _ = writeln!(out, "{device}\t{reading:.3}\t{}", timestamp(t));
    }

    fn payment(&mut self, out: &mut String) {
        let t = self.advance();
        let card = self.rng.random_range(0..self.cards.len());
        let (home, usual) = self.cards[card];
        let (country, amount) = match self.rng.random_range(0..1000) {
            // Fraud: the card abroad, far above its usual amount.
            0..=1 => (
                (home + 1 + self.rng.random_range(0..COUNTRIES.len() - 1)) % COUNTRIES.len(),
                usual * self.rng.random_range(10.0..50.0),
            ),
            _ => (home, usual * self.rng.random_range(0.2..2.0)),
        };
        let merchant = self.rng.random_range(0..5000);
        let _ = writeln!(
            out,
            "{card}\t{amount:.2}\t{}\tm{merchant}\t{}",
            COUNTRIES[country],
            timestamp(t)
        );
        // Fraud bursts: a stolen card is used many times within a minute.
        if self.rng.random_bool(0.0005) {
            for i in 0..8 {
                let _ = writeln!(
                    out,
                    "{card}\t{:.2}\t{}\tm{}\t{}",
                    usual * 3.0,
                    COUNTRIES[home],
                    self.rng.random_range(0..5000),
                    timestamp(t + i * 1_000_000)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nexmark_mix_and_determinism() {
        let mut a = Generator::new(Kind::Nexmark, 7, BASE_MICROS, 100.0);
        let mut b = Generator::new(Kind::Nexmark, 7, BASE_MICROS, 100.0);
        let mut out_a = vec![String::new(); 3];
        let mut out_b = vec![String::new(); 3];
        a.fill(5000, &mut out_a);
        b.fill(5000, &mut out_b);
        assert_eq!(out_a, out_b, "the same seed makes the same events");
        let lines: Vec<usize> = out_a.iter().map(|s| s.lines().count()).collect();
        assert_eq!(lines, vec![100, 300, 4600]);
        // Event time advances 0.1 ms per event.
        assert_eq!(a.time, BASE_MICROS + 5000 * 100);
    }

    #[test]
    fn hashtags_are_skewed() {
        let mut g = Generator::new(Kind::Tweets, 1, BASE_MICROS, 1000.0);
        let mut out = vec![String::new()];
        g.fill(10_000, &mut out);
        let top = out[0].lines().filter(|l| l.contains("\t#tag0\t")).count();
        let rare = out[0]
            .lines()
            .filter(|l| l.contains("\t#tag2999\t"))
            .count();
        assert!(top > 50 * rare.max(1), "top {top}, rare {rare}");
    }
}

/// How `weir gen` runs.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// What to make.
    pub kind: Kind,
    /// The stream name (for the one-stream kinds).
    pub stream: Option<String>,
    /// Events per second; `None` as fast as possible.
    pub rate: Option<u64>,
    /// Stop after this many events; `None` runs until stopped.
    pub events: Option<u64>,
    /// The random seed.
    pub seed: u64,
    /// The server.
    pub connect: String,
}

/// Generates events into a server's streams (created if missing), printing a progress line
/// every second to stderr.
pub async fn run(options: GenOptions) -> Result<(), String> {
    use futures::SinkExt;
    let (client, connection) = tokio_postgres::connect(&options.connect, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", options.connect))?;
    tokio::spawn(connection);
    let streams = streams(options.kind, options.stream.as_deref());
    for (_, create) in &streams {
        client
            .batch_execute(create)
            .await
            .map_err(|e| format!("{create}: {e}"))?;
    }
    // Event time follows the wall clock at a steady rate; flat out, from 2026-01-01 at 0.1 ms
    // per event for Nexmark (its rule) and 1 ms for the others (a thousand events a second).
    let (start, step) = match options.rate {
        Some(rate) => (
            chrono::Utc::now().timestamp_micros(),
            1_000_000.0 / rate.max(1) as f64,
        ),
        None if options.kind == Kind::Nexmark => (BASE_MICROS, 100.0),
        None => (BASE_MICROS, 1000.0),
    };
    let mut generator = Generator::new(options.kind, options.seed, start, step);
    let started = std::time::Instant::now();
    let mut last_report = started;
    let total = options.events.unwrap_or(u64::MAX);
    // Batches of a tenth of a second at a set rate, else of 10 000 events.
    let batch = options.rate.map_or(10_000, |r| (r / 10).max(1));
    let mut buffers = vec![String::new(); streams.len()];
    while generator.count < total {
        let n = batch.min(total - generator.count);
        generator.fill(n, &mut buffers);
        for ((name, _), rows) in streams.iter().zip(buffers.iter_mut()) {
            if rows.is_empty() {
                continue;
            }
            let sink = client
                .copy_in::<_, bytes::Bytes>(&format!("COPY {name} FROM STDIN"))
                .await
                .map_err(|e| format!("COPY {name}: {e}"))?;
            futures::pin_mut!(sink);
            sink.send(bytes::Bytes::from(std::mem::take(rows)))
                .await
                .map_err(|e| format!("COPY {name}: {e}"))?;
            sink.finish()
                .await
                .map_err(|e| format!("COPY {name}: {e}"))?;
        }
        if let Some(rate) = options.rate {
            // Keep to the rate: wait until the wall clock catches up with the events sent.
            let due = std::time::Duration::from_secs_f64(generator.count as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        if last_report.elapsed() >= std::time::Duration::from_secs(1) || generator.count >= total {
            last_report = std::time::Instant::now();
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "weir gen: {} events in {secs:.1}s ({:.0} events/s)",
                generator.count,
                generator.count as f64 / secs.max(1e-9)
            );
        }
    }
    Ok(())
}
