;; A summary of a byte stream, for ursula's compute extension (reducer ABI 1, docs/wasm.md).
;;
;; State: 16 bytes, two little-endian u64: the number of appends reduced and their total bytes
;; (the empty state is both zero). Render: {"appends":N,"bytes":M} as JSON.
;; No imports; wasmtime compiles this text when the module is registered.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 16) "{\"appends\":")
  (data (i32.const 32) ",\"bytes\":")

  (func (export "ursula_abi_version") (result i32) (i32.const 1))

  ;; a bump allocator: 8-byte aligned, growing memory as needed (a failed grow traps)
  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have))
                                                     (i32.const 65535))
                                            (i32.const 16)))
                    (i32.const -1))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $p))

  (func $pack (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len))))

  (func (export "reduce") (param $sp i32) (param $sl i32) (param $rp i32) (param $rl i32)
                          (result i64)
    (local $out i32) (local $count i64) (local $total i64)
    (if (i32.ge_u (local.get $sl) (i32.const 16))
      (then (local.set $count (i64.load (local.get $sp)))
            (local.set $total (i64.load offset=8 (local.get $sp)))))
    (local.set $out (call $alloc (i32.const 16)))
    (i64.store (local.get $out) (i64.add (local.get $count) (i64.const 1)))
    (i64.store offset=8 (local.get $out)
               (i64.add (local.get $total) (i64.extend_i32_u (local.get $rl))))
    (call $pack (local.get $out) (i32.const 16)))

  ;; write the decimal digits of $v at $p; returns the end
  (func $decimal (param $p i32) (param $v i64) (result i32)
    (local $tmp i32) (local $n i32)
    (local.set $tmp (call $alloc (i32.const 24)))
    (loop $digits
      (i32.store8 (i32.add (local.get $tmp) (local.get $n))
                  (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $digits (i64.ne (local.get $v) (i64.const 0))))
    (loop $copy
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.load8_u (i32.add (local.get $tmp) (local.get $n))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br_if $copy (i32.gt_s (local.get $n) (i32.const 0))))
    (local.get $p))

  (func (export "render") (param $sp i32) (param $sl i32) (result i64)
    (local $out i32) (local $p i32) (local $count i64) (local $total i64)
    (if (i32.ge_u (local.get $sl) (i32.const 16))
      (then (local.set $count (i64.load (local.get $sp)))
            (local.set $total (i64.load offset=8 (local.get $sp)))))
    (local.set $out (call $alloc (i32.const 64)))
    (memory.copy (local.get $out) (i32.const 16) (i32.const 11))
    (local.set $p (call $decimal (i32.add (local.get $out) (i32.const 11)) (local.get $count)))
    (memory.copy (local.get $p) (i32.const 32) (i32.const 9))
    (local.set $p (call $decimal (i32.add (local.get $p) (i32.const 9)) (local.get $total)))
    (i32.store8 (local.get $p) (i32.const 125))
    (call $pack (local.get $out) (i32.sub (i32.add (local.get $p) (i32.const 1)) (local.get $out))))
)
