//! Fuzzes the whole frontend: parsing, shell-word expansion and planning
//! must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_frontend::plan::{Offline, PlanOptions, plan_dockerfile};
use strata_frontend::shell::Lexer;

fuzz_target!(|data: &[u8]| {
    let opts = PlanOptions::default();
    let _ = plan_dockerfile(data, None, &opts, &Offline);
    if let Ok(text) = std::str::from_utf8(data) {
        let env = vec![("A".to_string(), "x y".to_string())];
        for escape in ['\\', '`'] {
            let lexer = Lexer::new(escape);
            let _ = lexer.process_word(text, &env);
            let _ = lexer.process_words(text, &env);
        }
    }
});
