//! The registry of diagnostic codes. Numbers are explicit and never reused; each code
//! has a page in docs/errors/ (printed by `steward explain CODE`).
//!
//! Ranges: E00xx syntax, E01xx expressions (CEL), E02xx names and references,
//! E03xx workflow structure, E04xx time, calendars and schedules, E05xx approvals,
//! counters and values.

use std::fmt;

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident = $num:literal, $title:literal; )*) => {
        /// A stable diagnostic code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $( $(#[$doc])* $name, )*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            pub fn number(self) -> u16 {
                match self { $(Code::$name => $num,)* }
            }

            /// One line saying what the code is about.
            pub fn title(self) -> &'static str {
                match self { $(Code::$name => $title,)* }
            }
        }
    };
}

codes! {
    /// The parser met something it did not expect.
    Syntax = 1, "syntax error";

    /// A CEL expression does not parse.
    ExprSyntax = 100, "invalid expression";
    /// A function that CEL and Steward do not define.
    UnknownFunction = 101, "unknown function";
    /// A function called with the wrong number of arguments.
    WrongArity = 102, "wrong number of arguments";
    /// A regular expression literal that does not compile.
    InvalidRegex = 103, "invalid regular expression";
    /// A literal out of range or with a bad escape.
    InvalidLiteral = 104, "invalid literal";
}

impl Code {
    /// `E0100`
    pub fn id(self) -> String {
        format!("E{:04}", self.number())
    }

    /// Parses `E0100` (or `e100`, `100`).
    pub fn parse(text: &str) -> Option<Code> {
        let digits = text.trim_start_matches(['E', 'e']);
        let number: u16 = digits.parse().ok()?;
        Code::ALL.iter().copied().find(|c| c.number() == number)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E{:04}", self.number())
    }
}
