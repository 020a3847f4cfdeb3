//! Run records → `report.json` / `report.md` / `report.html`.
//!
//! `records` owns the files a landrush run folder holds (DESIGN.md "Run records"); `checks` owns the
//! shape of the checkers' verdicts. Both are shared by every part of the harness.

pub mod checks;
pub mod records;
