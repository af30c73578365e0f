//! The policy: rescue rules, then PACL -> VACL in -> RACL in -> RACL out -> VACL out.
