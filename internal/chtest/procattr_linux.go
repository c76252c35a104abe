package chtest

import "syscall"

// procAttr makes a private server die with the test binary, so an
// interrupted test run leaves no server behind.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
