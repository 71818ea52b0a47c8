// Minimal Go program: its ELF carries a .note.go.buildid note and no GNU build id.
package main

import "fmt"

func main() {
	fmt.Println("hello")
}
