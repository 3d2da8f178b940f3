;; The Durable Streams State Protocol materialiser, for ursula's compute extension
;; (reducer ABI 1, docs/wasm.md). No imports; wasmtime compiles this text when the module is
;; registered.
;;
;; Records are State Protocol messages (one JSON value each):
;;   change  {"type": T, "key": K, "value": V, "headers": {"operation": OP, ...}, ...}
;;           OP insert, update, upsert: (T, K) holds V; delete: (T, K) is removed
;;   control {"headers": {"control": "reset"}}: the state is cleared;
;;           other controls (snapshot-start, snapshot-end) leave it as it is
;; Anything else (no headers, an unknown operation, malformed JSON) is refused (reduce answers
;; -1: the server counts the record as "rejected" and keeps the state).
;;
;; State: the live entities in the order they were first set, each
;;   u32le len(T) | u32le len(K) | u32le len(V) | T | K | V
;; where T, K and V are the JSON texts of the message's type, key and value as written (two
;; keys are the same entity when their JSON texts are the same: "a" and "\u0061" differ).
;;
;; Render (the snapshot body): one JSON array of State Protocol messages,
;;   [{"headers":{"control":"snapshot-start"}},
;;    {"type":T,"key":K,"value":V,"headers":{"operation":"insert"}}, ...  (one per entity)
;;    {"headers":{"control":"snapshot-end"}}]
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (global $bad (mut i32) (i32.const 0))   ;; the record is malformed
  (global $vend (mut i32) (i32.const 0))  ;; $find: where the value found ends

  (data (i32.const 16) "type")
  (data (i32.const 24) "key")
  (data (i32.const 32) "value")
  (data (i32.const 40) "headers")
  (data (i32.const 48) "operation")
  (data (i32.const 64) "control")
  (data (i32.const 80) "\"insert\"")
  (data (i32.const 96) "\"update\"")
  (data (i32.const 112) "\"upsert\"")
  (data (i32.const 128) "\"delete\"")
  (data (i32.const 144) "\"reset\"")
  (data (i32.const 160) "{\"type\":")                             ;; 8
  (data (i32.const 176) ",\"key\":")                              ;; 7
  (data (i32.const 192) ",\"value\":")                            ;; 9
  (data (i32.const 208) ",\"headers\":{\"operation\":\"insert\"}}") ;; 34
  (data (i32.const 256) "[{\"headers\":{\"control\":\"snapshot-start\"}}") ;; 41
  (data (i32.const 320) ",{\"headers\":{\"control\":\"snapshot-end\"}}]")  ;; 40

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

  (func $memeq (param $a i32) (param $b i32) (param $n i32) (result i32)
    (block $differ
      (loop $next
        (if (i32.eqz (local.get $n)) (then (return (i32.const 1))))
        (br_if $differ (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b))))
        (local.set $a (i32.add (local.get $a) (i32.const 1)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; whether the text [start, end) is the n bytes at lit
  (func $is (param $start i32) (param $end i32) (param $lit i32) (param $n i32) (result i32)
    (if (result i32) (i32.eq (i32.sub (local.get $end) (local.get $start)) (local.get $n))
      (then (call $memeq (local.get $start) (local.get $lit) (local.get $n)))
      (else (i32.const 0))))

  (func $isws (param $c i32) (result i32)
    (i32.or (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 9)))
            (i32.or (i32.eq (local.get $c) (i32.const 10)) (i32.eq (local.get $c) (i32.const 13)))))

  (func $ws (param $p i32) (param $end i32) (result i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (br_if $done (i32.eqz (call $isws (i32.load8_u (local.get $p)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $p))

  ;; $p at an opening quote: the position after the closing one
  (func $skip_string (param $p i32) (param $end i32) (result i32)
    (local $c i32)
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (loop $next
      (if (i32.ge_u (local.get $p) (local.get $end))
        (then (global.set $bad (i32.const 1)) (return (local.get $end))))
      (local.set $c (i32.load8_u (local.get $p)))
      (if (i32.eq (local.get $c) (i32.const 92))  ;; a backslash: skip the escaped byte
        (then (local.set $p (i32.add (local.get $p) (i32.const 2))) (br $next)))
      (if (i32.eq (local.get $c) (i32.const 34))
        (then (return (i32.add (local.get $p) (i32.const 1)))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $next))
    (local.get $p))

  ;; $p at a JSON value: the position after it
  (func $skip_value (param $p i32) (param $end i32) (result i32)
    (local $c i32) (local $depth i32) (local $start i32)
    (if (i32.ge_u (local.get $p) (local.get $end))
      (then (global.set $bad (i32.const 1)) (return (local.get $end))))
    (local.set $c (i32.load8_u (local.get $p)))
    (if (i32.eq (local.get $c) (i32.const 34))
      (then (return (call $skip_string (local.get $p) (local.get $end)))))
    (if (i32.or (i32.eq (local.get $c) (i32.const 123)) (i32.eq (local.get $c) (i32.const 91)))
      (then
        (loop $next
          (if (i32.ge_u (local.get $p) (local.get $end))
            (then (global.set $bad (i32.const 1)) (return (local.get $end))))
          (local.set $c (i32.load8_u (local.get $p)))
          (if (i32.eq (local.get $c) (i32.const 34))
            (then (local.set $p (call $skip_string (local.get $p) (local.get $end)))
                  (br $next)))
          (if (i32.or (i32.eq (local.get $c) (i32.const 123)) (i32.eq (local.get $c) (i32.const 91)))
            (then (local.set $depth (i32.add (local.get $depth) (i32.const 1)))))
          (if (i32.or (i32.eq (local.get $c) (i32.const 125)) (i32.eq (local.get $c) (i32.const 93)))
            (then (local.set $depth (i32.sub (local.get $depth) (i32.const 1)))))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (br_if $next (i32.gt_s (local.get $depth) (i32.const 0))))
        (return (local.get $p))))
    ;; a number, true, false or null: up to the next delimiter
    (local.set $start (local.get $p))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (br_if $done (i32.or (i32.or (i32.eq (local.get $c) (i32.const 44))
                                     (i32.eq (local.get $c) (i32.const 125)))
                             (i32.or (i32.eq (local.get $c) (i32.const 93))
                                     (call $isws (local.get $c)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (if (i32.eq (local.get $p) (local.get $start)) (then (global.set $bad (i32.const 1))))
    (local.get $p))

  ;; the value of member $name (n bytes) of the object at [$obj, $end): its start, and its end
  ;; in $vend; -1 when absent (or when the text is not an object: then $bad is set)
  (func $find (param $obj i32) (param $end i32) (param $name i32) (param $n i32) (result i32)
    (local $p i32) (local $ks i32) (local $ke i32) (local $vs i32) (local $c i32)
    (local.set $p (call $ws (local.get $obj) (local.get $end)))
    (if (i32.ge_u (local.get $p) (local.get $end))
      (then (global.set $bad (i32.const 1)) (return (i32.const -1))))
    (if (i32.ne (i32.load8_u (local.get $p)) (i32.const 123))
      (then (global.set $bad (i32.const 1)) (return (i32.const -1))))
    (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1)) (local.get $end)))
    (if (i32.lt_u (local.get $p) (local.get $end))
      (then (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 125))
              (then (return (i32.const -1))))))
    (loop $member
      (if (i32.ge_u (local.get $p) (local.get $end))
        (then (global.set $bad (i32.const 1)) (return (i32.const -1))))
      (if (i32.ne (i32.load8_u (local.get $p)) (i32.const 34))
        (then (global.set $bad (i32.const 1)) (return (i32.const -1))))
      (local.set $ks (i32.add (local.get $p) (i32.const 1)))
      (local.set $p (call $skip_string (local.get $p) (local.get $end)))
      (local.set $ke (i32.sub (local.get $p) (i32.const 1)))
      (local.set $p (call $ws (local.get $p) (local.get $end)))
      (if (i32.ge_u (local.get $p) (local.get $end))
        (then (global.set $bad (i32.const 1)) (return (i32.const -1))))
      (if (i32.ne (i32.load8_u (local.get $p)) (i32.const 58))
        (then (global.set $bad (i32.const 1)) (return (i32.const -1))))
      (local.set $vs (call $ws (i32.add (local.get $p) (i32.const 1)) (local.get $end)))
      (local.set $p (call $skip_value (local.get $vs) (local.get $end)))
      (if (global.get $bad) (then (return (i32.const -1))))
      (if (call $is (local.get $ks) (local.get $ke) (local.get $name) (local.get $n))
        (then (global.set $vend (local.get $p)) (return (local.get $vs))))
      (local.set $p (call $ws (local.get $p) (local.get $end)))
      (if (i32.ge_u (local.get $p) (local.get $end))
        (then (global.set $bad (i32.const 1)) (return (i32.const -1))))
      (local.set $c (i32.load8_u (local.get $p)))
      (if (i32.eq (local.get $c) (i32.const 44))
        (then (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1)) (local.get $end)))
              (br $member)))
      (if (i32.ne (local.get $c) (i32.const 125)) (then (global.set $bad (i32.const 1)))))
    (i32.const -1))

  ;; write one state entry at $p; returns its end
  (func $entry (param $p i32) (param $t i32) (param $tl i32) (param $k i32) (param $kl i32)
                (param $v i32) (param $vl i32) (result i32)
    (i32.store (local.get $p) (local.get $tl))
    (i32.store offset=4 (local.get $p) (local.get $kl))
    (i32.store offset=8 (local.get $p) (local.get $vl))
    (local.set $p (i32.add (local.get $p) (i32.const 12)))
    (memory.copy (local.get $p) (local.get $t) (local.get $tl))
    (local.set $p (i32.add (local.get $p) (local.get $tl)))
    (memory.copy (local.get $p) (local.get $k) (local.get $kl))
    (local.set $p (i32.add (local.get $p) (local.get $kl)))
    (memory.copy (local.get $p) (local.get $v) (local.get $vl))
    (i32.add (local.get $p) (local.get $vl)))

  (func (export "reduce") (param $sp i32) (param $sl i32) (param $rp i32) (param $rl i32)
                          (result i64)
    (local $rend i32) (local $h i32) (local $hend i32) (local $c i32) (local $o i32)
    (local $set i32) (local $t i32) (local $tl i32) (local $k i32) (local $kl i32)
    (local $v i32) (local $vl i32) (local $pos i32) (local $send i32) (local $found i32)
    (local $flen i32) (local $elen i32) (local $out i32) (local $p i32) (local $rest i32)
    (global.set $bad (i32.const 0))
    (local.set $rend (i32.add (local.get $rp) (local.get $rl)))
    (local.set $h (call $find (local.get $rp) (local.get $rend) (i32.const 40) (i32.const 7)))
    (if (i32.lt_s (local.get $h) (i32.const 0)) (then (return (i64.const -1))))
    (local.set $hend (global.get $vend))
    ;; a control message
    (local.set $c (call $find (local.get $h) (local.get $hend) (i32.const 64) (i32.const 7)))
    (if (global.get $bad) (then (return (i64.const -1))))
    (if (i32.ge_s (local.get $c) (i32.const 0))
      (then
        (if (call $is (local.get $c) (global.get $vend) (i32.const 144) (i32.const 7))
          (then (return (call $pack (local.get $sp) (i32.const 0)))))
        (return (call $pack (local.get $sp) (local.get $sl)))))
    ;; a change message
    (local.set $o (call $find (local.get $h) (local.get $hend) (i32.const 48) (i32.const 9)))
    (if (i32.lt_s (local.get $o) (i32.const 0)) (then (return (i64.const -1))))
    (local.set $set
      (i32.or (i32.or (call $is (local.get $o) (global.get $vend) (i32.const 80) (i32.const 8))
                      (call $is (local.get $o) (global.get $vend) (i32.const 96) (i32.const 8)))
              (call $is (local.get $o) (global.get $vend) (i32.const 112) (i32.const 8))))
    (if (i32.eqz (local.get $set))
      (then (if (i32.eqz (call $is (local.get $o) (global.get $vend) (i32.const 128) (i32.const 8)))
              (then (return (i64.const -1))))))
    (local.set $t (call $find (local.get $rp) (local.get $rend) (i32.const 16) (i32.const 4)))
    (if (i32.lt_s (local.get $t) (i32.const 0)) (then (return (i64.const -1))))
    (local.set $tl (i32.sub (global.get $vend) (local.get $t)))
    (local.set $k (call $find (local.get $rp) (local.get $rend) (i32.const 24) (i32.const 3)))
    (if (i32.lt_s (local.get $k) (i32.const 0)) (then (return (i64.const -1))))
    (local.set $kl (i32.sub (global.get $vend) (local.get $k)))
    (if (local.get $set)
      (then
        (local.set $v (call $find (local.get $rp) (local.get $rend) (i32.const 32) (i32.const 5)))
        (if (i32.lt_s (local.get $v) (i32.const 0)) (then (return (i64.const -1))))
        (local.set $vl (i32.sub (global.get $vend) (local.get $v)))))
    ;; where the entity is in the state
    (local.set $found (i32.const -1))
    (local.set $pos (local.get $sp))
    (local.set $send (i32.add (local.get $sp) (local.get $sl)))
    (block $searched
      (loop $next
        (br_if $searched (i32.ge_u (local.get $pos) (local.get $send)))
        (local.set $elen (i32.add (i32.add (i32.const 12) (i32.load (local.get $pos)))
                                  (i32.add (i32.load offset=4 (local.get $pos))
                                           (i32.load offset=8 (local.get $pos)))))
        (if (i32.and (i32.eq (i32.load (local.get $pos)) (local.get $tl))
                     (i32.eq (i32.load offset=4 (local.get $pos)) (local.get $kl)))
          (then
            (if (i32.and (call $memeq (i32.add (local.get $pos) (i32.const 12)) (local.get $t)
                                      (local.get $tl))
                         (call $memeq (i32.add (i32.add (local.get $pos) (i32.const 12))
                                               (local.get $tl))
                                      (local.get $k) (local.get $kl)))
              (then (local.set $found (local.get $pos)) (local.set $flen (local.get $elen))
                    (br $searched)))))
        (local.set $pos (i32.add (local.get $pos) (local.get $elen)))
        (br $next)))
    (if (i32.and (i32.eqz (local.get $set)) (i32.lt_s (local.get $found) (i32.const 0)))
      (then (return (call $pack (local.get $sp) (local.get $sl)))))  ;; delete of nothing
    (local.set $out (call $alloc (i32.add (i32.add (local.get $sl) (i32.const 12))
                                          (i32.add (i32.add (local.get $tl) (local.get $kl))
                                                   (local.get $vl)))))
    (if (i32.ge_s (local.get $found) (i32.const 0))
      (then
        (memory.copy (local.get $out) (local.get $sp) (i32.sub (local.get $found) (local.get $sp)))
        (local.set $p (i32.add (local.get $out) (i32.sub (local.get $found) (local.get $sp))))
        (if (local.get $set)
          (then (local.set $p (call $entry (local.get $p) (local.get $t) (local.get $tl)
                                    (local.get $k) (local.get $kl) (local.get $v)
                                    (local.get $vl)))))
        (local.set $rest (i32.sub (local.get $send)
                                  (i32.add (local.get $found) (local.get $flen))))
        (memory.copy (local.get $p) (i32.add (local.get $found) (local.get $flen))
                     (local.get $rest))
        (local.set $p (i32.add (local.get $p) (local.get $rest))))
      (else
        (memory.copy (local.get $out) (local.get $sp) (local.get $sl))
        (local.set $p (call $entry (i32.add (local.get $out) (local.get $sl)) (local.get $t)
                            (local.get $tl) (local.get $k) (local.get $kl) (local.get $v)
                            (local.get $vl)))))
    (call $pack (local.get $out) (i32.sub (local.get $p) (local.get $out))))

  (func $put (param $p i32) (param $src i32) (param $n i32) (result i32)
    (memory.copy (local.get $p) (local.get $src) (local.get $n))
    (i32.add (local.get $p) (local.get $n)))

  (func (export "render") (param $sp i32) (param $sl i32) (result i64)
    (local $pos i32) (local $send i32) (local $total i32) (local $out i32) (local $p i32)
    (local $tl i32) (local $kl i32) (local $vl i32) (local $e i32)
    (local.set $send (i32.add (local.get $sp) (local.get $sl)))
    (local.set $total (i32.const 81))
    (local.set $pos (local.get $sp))
    (block $counted
      (loop $next
        (br_if $counted (i32.ge_u (local.get $pos) (local.get $send)))
        (local.set $e (i32.add (i32.add (i32.load (local.get $pos))
                                        (i32.load offset=4 (local.get $pos)))
                               (i32.load offset=8 (local.get $pos))))
        (local.set $total (i32.add (local.get $total) (i32.add (local.get $e) (i32.const 59))))
        (local.set $pos (i32.add (local.get $pos) (i32.add (local.get $e) (i32.const 12))))
        (br $next)))
    (local.set $out (call $alloc (local.get $total)))
    (local.set $p (call $put (local.get $out) (i32.const 256) (i32.const 41)))
    (local.set $pos (local.get $sp))
    (block $written
      (loop $next
        (br_if $written (i32.ge_u (local.get $pos) (local.get $send)))
        (local.set $tl (i32.load (local.get $pos)))
        (local.set $kl (i32.load offset=4 (local.get $pos)))
        (local.set $vl (i32.load offset=8 (local.get $pos)))
        (local.set $pos (i32.add (local.get $pos) (i32.const 12)))
        (i32.store8 (local.get $p) (i32.const 44))
        (local.set $p (call $put (i32.add (local.get $p) (i32.const 1)) (i32.const 160) (i32.const 8)))
        (local.set $p (call $put (local.get $p) (local.get $pos) (local.get $tl)))
        (local.set $pos (i32.add (local.get $pos) (local.get $tl)))
        (local.set $p (call $put (local.get $p) (i32.const 176) (i32.const 7)))
        (local.set $p (call $put (local.get $p) (local.get $pos) (local.get $kl)))
        (local.set $pos (i32.add (local.get $pos) (local.get $kl)))
        (local.set $p (call $put (local.get $p) (i32.const 192) (i32.const 9)))
        (local.set $p (call $put (local.get $p) (local.get $pos) (local.get $vl)))
        (local.set $pos (i32.add (local.get $pos) (local.get $vl)))
        (local.set $p (call $put (local.get $p) (i32.const 208) (i32.const 34)))
        (br $next)))
    (local.set $p (call $put (local.get $p) (i32.const 320) (i32.const 40)))
    (call $pack (local.get $out) (i32.sub (local.get $p) (local.get $out))))
)
