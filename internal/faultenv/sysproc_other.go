//go:build !linux

package faultenv

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
