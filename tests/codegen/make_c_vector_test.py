import sys; open(sys.argv[2],"w").write("int main(void){return 0;}\n")
