// Package procfs reads what the test harnesses, the chaos program and the benchmark need of
// Linux's /proc: a process's parent, group, state, start time and CPU time, its peak memory,
// its children, and the process listening on a TCP port.
package procfs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc/<pid>/stat's times: USER_HZ, 100 on every Linux platform Go
// supports.
const clockTick = 10 * time.Millisecond

// Stat is what /proc/<pid>/stat says of a process.
type Stat struct {
	State     byte
	PPID      int
	PGRP      int
	CPU       time.Duration // user + system time so far
	StartTime uint64        // clock ticks after boot: with the pid, identifies a process
}

// Read reads /proc/<pid>/stat; false when there is no such process.
func Read(pid int) (Stat, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, false
	}
	return Parse(string(data))
}

// Parse reads the text of /proc/<pid>/stat.
func Parse(s string) (Stat, bool) {
	// The command name is in parentheses and may hold spaces: the fields follow the last ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Stat{}, false
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); ppid is field 4, pgrp 5, utime 14, stime 15, starttime 22.
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	pgrp, _ := strconv.Atoi(f[2])
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return Stat{State: f[0][0], PPID: ppid, PGRP: pgrp, CPU: time.Duration(utime+stime) * clockTick, StartTime: start}, true
}

// Children lists the processes whose parent is pid.
func Children(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := Read(child); ok && st.PPID == pid {
			kids = append(kids, child)
		}
	}
	return kids
}

// PeakRSS is the most resident memory the process has used (VmHWM), in bytes.
func PeakRSS(pid int) (uint64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("procfs: no VmHWM in /proc/%d/status", pid)
}

// Listener returns the pid of the process listening on TCP port on any local address.
func Listener(port int) (int, error) {
	inode := ""
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			// local_address is "HEXIP:HEXPORT"; state 0A is LISTEN; inode is field 10.
			if len(f) < 10 || f[3] != "0A" {
				continue
			}
			if _, hexPort, ok := strings.Cut(f[1], ":"); ok {
				if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil && int(p) == port {
					inode = f[9]
				}
			}
		}
	}
	if inode == "" {
		return 0, fmt.Errorf("procfs: nothing listens on port %d", port)
	}
	want := "socket:[" + inode + "]"
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		if link, err := os.Readlink(fd); err == nil && link == want {
			return strconv.Atoi(strings.Split(fd, "/")[2])
		}
	}
	return 0, fmt.Errorf("procfs: the process listening on port %d is not visible (another user's?)", port)
}
