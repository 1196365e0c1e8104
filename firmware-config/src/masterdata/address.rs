//! Addresses a base grid covers, as a street office writes them: a road and a house-number
//! range, optionally one side of the road (`红星路1-99号单`, `红星路2-60号双`, `光明路8号`), or a
//! named place (an estate, a market: `纺织新村`). A resident's address text (`红星路12号3单元`)
//! is matched against them.

use super::Malformed;

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Both,
    /// 单: odd numbers.
    Odd,
    /// 双: even numbers.
    Even,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Covered {
    Numbers {
        road: String,
        from: u32,
        to: u32,
        side: Side,
    },
    Place(String),
}

impl fmt::Display for Covered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Covered::Place(p) => f.write_str(p),
            Covered::Numbers {
                road,
                from,
                to,
                side,
            } => {
                write!(f, "{road}{from}")?;
                if to != from {
                    write!(f, "-{to}")?;
                }
                f.write_str("号")?;
                match side {
                    Side::Both => Ok(()),
                    Side::Odd => f.write_str("单"),
                    Side::Even => f.write_str("双"),
                }
            }
        }
    }
}

/// Splits the `addresses` field: entries separated by `;` or `；`.
pub fn entries(field: &str) -> impl Iterator<Item = &str> {
    field
        .split([';', '；'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
}

/// Reads one entry.
pub fn parse(entry: &str) -> Result<Covered, Malformed> {
    let entry = entry.trim();
    if entry.is_empty() || entry.chars().count() > 64 {
        return Err(Malformed(format!(
            "{entry:?}: an address is 1 to 64 characters"
        )));
    }
    let Some(start) = entry.find(|c: char| c.is_ascii_digit()) else {
        return Ok(Covered::Place(entry.to_owned()));
    };
    let road = entry[..start].trim().to_owned();
    if road.chars().count() < 2 {
        return Err(Malformed(format!(
            "{entry:?}: name the road before the house numbers"
        )));
    }
    let rest = &entry[start..];
    let (numbers, side) = match rest.strip_suffix("号单") {
        Some(n) => (n, Side::Odd),
        None => match rest.strip_suffix("号双") {
            Some(n) => (n, Side::Even),
            None => match rest.strip_suffix('号') {
                Some(n) => (n, Side::Both),
                None => {
                    return Err(Malformed(format!(
                        "{entry:?}: house numbers end with 号 (and 单 or 双 for one side)"
                    )))
                }
            },
        },
    };
    let number = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| Malformed(format!("{entry:?}: {s:?} is not a house number")))
    };
    let (from, to) = match numbers.split_once('-') {
        Some((a, b)) => (number(a)?, number(b)?),
        None => {
            let n = number(numbers)?;
            (n, n)
        }
    };
    if from == 0 || to < from {
        return Err(Malformed(format!(
            "{entry:?}: the range must run from 1 upwards"
        )));
    }
    let wrong_side = |n: u32| match side {
        Side::Both => false,
        Side::Odd => n % 2 == 0,
        Side::Even => n % 2 == 1,
    };
    if wrong_side(from) || wrong_side(to) {
        return Err(Malformed(format!(
            "{entry:?}: a range of one side starts and ends on that side"
        )));
    }
    Ok(Covered::Numbers {
        road,
        from,
        to,
        side,
    })
}

/// A resident's address text: the road and house number when it has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted<'a> {
    pub text: &'a str,
    pub road_number: Option<(&'a str, u32)>,
}

pub fn read_query(text: &str) -> Wanted<'_> {
    let text = text.trim();
    let road_number = text.find(|c: char| c.is_ascii_digit()).and_then(|start| {
        let road = text[..start].trim();
        let digits: String = text[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let n = digits.parse::<u32>().ok()?;
        (road.chars().count() >= 2).then_some((road, n))
    });
    Wanted { text, road_number }
}

impl Covered {
    /// How well `q` falls in this entry: 2 for a road and number in range, 1 for a named
    /// place the text mentions; `None` when it does not.
    pub fn covers(&self, q: &Wanted<'_>) -> Option<u8> {
        match self {
            Covered::Numbers {
                road,
                from,
                to,
                side,
            } => {
                let (r, n) = q.road_number?;
                let on_side = match side {
                    Side::Both => true,
                    Side::Odd => n % 2 == 1,
                    Side::Even => n % 2 == 0,
                };
                // The road may be written with its district in front (`红星街道红星路`).
                (r.ends_with(road.as_str()) && (*from..=*to).contains(&n) && on_side).then_some(2)
            }
            Covered::Place(p) => (q.text.contains(p.as_str())).then_some(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_as_a_street_office_writes_them() {
        assert_eq!(
            parse("红星路1-99号单").unwrap(),
            Covered::Numbers {
                road: "红星路".into(),
                from: 1,
                to: 99,
                side: Side::Odd
            }
        );
        assert_eq!(parse("光明路8号").unwrap().to_string(), "光明路8号");
        assert_eq!(
            parse("红星路2-60号双").unwrap().to_string(),
            "红星路2-60号双"
        );
        assert_eq!(
            parse("纺织新村").unwrap(),
            Covered::Place("纺织新村".into())
        );
        for bad in [
            "红星路1-99",
            "红星路9-1号",
            "红星路2-99号单",
            "8号",
            "红星路0-5号",
            "红星路5-x号",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(entries("a; b；c;;").collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn a_residents_address_falls_in_its_range_and_side() {
        let odd = parse("红星路1-99号单").unwrap();
        let even = parse("红星路2-60号双").unwrap();
        let q = read_query("红星路12号3单元");
        assert_eq!(q.road_number, Some(("红星路", 12)));
        assert_eq!(odd.covers(&q), None);
        assert_eq!(even.covers(&q), Some(2));
        assert_eq!(odd.covers(&read_query("红星街道红星路 13号")), Some(2));
        assert_eq!(even.covers(&read_query("红星路62号")), None);
        assert_eq!(even.covers(&read_query("东风巷12号")), None);
        let place = parse("纺织新村").unwrap();
        assert_eq!(place.covers(&read_query("纺织新村5幢201")), Some(1));
        assert_eq!(place.covers(&read_query("红星路12号")), None);
    }
}
