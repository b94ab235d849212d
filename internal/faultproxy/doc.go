// Package faultproxy is a TCP proxy on loopback that sits between clients and one server and
// injects network faults switched at run time, for the chaos tests: added latency, partitions,
// resets and refused connections.
//
// Guarantees:
//   - A Proxy listens on 127.0.0.1 only, on a port of its own, and forwards every accepted
//     connection to its one target address, byte for byte and in order, in both directions.
//   - Pass-through (the initial state, and the state after Heal) adds nothing but the copy.
//   - Latency delays every chunk read from one side by the configured duration of its
//     direction before it is written to the other side; chunks of one direction keep their order.
//   - Partition forwards nothing in either direction, and dials no server for new connections,
//     until Heal; connections stay open, so a client sees a hang (its own timeouts fire), never a
//     reset. What was sent meanwhile is delivered after Heal, as TCP would after a partition.
//   - Reset closes every current connection at once on both sides, with an RST (SO_LINGER 0).
//   - Refuse closes every new connection as soon as it is accepted, with an RST, until Heal;
//     current connections are left alone.
//   - Close stops the listener, closes every connection and returns when every goroutine of the
//     proxy has ended.
package faultproxy
