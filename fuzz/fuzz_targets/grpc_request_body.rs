#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::targets::grpc_request_body(data));
