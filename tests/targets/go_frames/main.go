// go_frames captures call stacks with runtime.Callers at several points of a call chain that
// mixes inlined and non-inlined functions (plain functions, methods, closures, generics, a
// stdlib callback) and prints, for each stack, every raw PC and the frames runtime.CallersFrames
// expands them to. It also prints how the executable is mapped, so a reader of the ELF file can
// turn runtime PCs back into link-time addresses (PIE). The pclntab symbolizer test compares
// its own results against this output.
//
// Output (one record per line, tab separated):
//
//	MAP <start hex> <file offset hex>        mapping of the executable at file offset 0
//	STACK <id>
//	PC <raw pc hex>                           as returned by runtime.Callers
//	FRAME <pc hex> <entry hex> <function> <file> <line>
//	END
package main

import (
	"bufio"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
)

var out = bufio.NewWriter(os.Stdout)
var stackID int

// capture records the current stack, including itself; small enough to be inlined.
func capture() {
	pcs := make([]uintptr, 128)
	n := runtime.Callers(0, pcs)
	dump(pcs[:n])
}

//go:noinline
func dump(pcs []uintptr) {
	stackID++
	out.WriteString("STACK " + strconv.Itoa(stackID) + "\n")
	for _, pc := range pcs {
		out.WriteString("PC " + strconv.FormatUint(uint64(pc), 16) + "\n")
	}
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		out.WriteString("FRAME " + strconv.FormatUint(uint64(f.PC), 16) + "\t" +
			strconv.FormatUint(uint64(f.Entry), 16) + "\t" + f.Function + "\t" + f.File + "\t" +
			strconv.Itoa(f.Line) + "\n")
		if !more {
			break
		}
	}
	out.WriteString("END\n")
}

// Leaf that is never inlined: capture() is inlined into it.
//
//go:noinline
func leaf(x int) int {
	capture()
	return x + 1
}

// Inlinable chain: inlineA -> inlineB -> leaf; both get inlined into their callers.
func inlineB(x int) int { return leaf(x*3) + 1 }
func inlineA(x int) int { return inlineB(x+2) * 2 }

type counter struct{ n int }

// Method inlined into its caller.
func (c *counter) bump(x int) int {
	c.n += inlineA(x)
	return c.n
}

//go:noinline
func (c *counter) deep(x int) int {
	if x > 0 {
		return c.deep(x-1) + 1
	}
	return c.bump(x)
}

type number interface{ ~int | ~int64 }

// Generic function (shape-instantiated; name printed with [...]).
//
//go:noinline
func sum[T number](xs []T) T {
	var s T
	for _, x := range xs {
		s += x
	}
	capture()
	return s
}

//go:noinline
func viaClosure(k int) int {
	f := func(y int) int {
		capture()
		return y * k
	}
	g := func(y int) int { return f(y) + 1 }
	return g(k)
}

//go:noinline
func viaSort() {
	xs := []int{3, 1, 2}
	captured := false
	sort.Slice(xs, func(i, j int) bool {
		if !captured {
			captured = true
			capture()
		}
		return xs[i] < xs[j]
	})
}

func main() {
	exe, _ := os.Readlink("/proc/self/exe")
	if maps, err := os.ReadFile("/proc/self/maps"); err == nil {
		for _, l := range strings.Split(string(maps), "\n") {
			f := strings.Fields(l)
			if len(f) >= 6 && f[5] == exe && strings.Trim(f[2], "0") == "" {
				start := f[0][:strings.IndexByte(f[0], '-')]
				out.WriteString("MAP " + start + " " + f[2] + "\n")
				break
			}
		}
	}
	c := &counter{}
	c.deep(3)
	_ = inlineA(5)
	_ = sum([]int{1, 2, 3})
	_ = sum([]int64{4})
	_ = viaClosure(2)
	viaSort()
	out.Flush()
}
