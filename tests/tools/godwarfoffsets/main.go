// Command godwarfoffsets prints the byte offsets of struct fields from a Go binary's DWARF, for
// tests of the agent's per-release runtime layouts (agent/goruntime/go_runtime.cc):
//
//	godwarfoffsets BINARY runtime.g.goid runtime.gobuf.sp ...
//
// prints "<struct>.<field> <offset>" per argument, or "<struct>.<field> -1" if absent.
package main

import (
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"os"
	"strings"
)

func main() {
	f, err := elf.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	d, err := f.DWARF()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	structs := map[string]*dwarf.StructType{}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil || e == nil {
			break
		}
		if e.Tag != dwarf.TagStructType {
			continue
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		if !strings.HasPrefix(name, "runtime.") || structs[name] != nil {
			continue
		}
		if t, err := d.Type(e.Offset); err == nil {
			if st, ok := t.(*dwarf.StructType); ok {
				structs[name] = st
			}
		}
	}
	for _, arg := range os.Args[2:] {
		i := strings.LastIndex(arg, ".")
		off := int64(-1)
		if st := structs[arg[:i]]; st != nil {
			if arg[i+1:] == "size" {
				off = st.ByteSize
			}
			for _, fl := range st.Field {
				if fl.Name == arg[i+1:] {
					off = fl.ByteOffset
				}
			}
		}
		fmt.Printf("%s %d\n", arg, off)
	}
}
