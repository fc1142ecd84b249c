# placeholder: helper writes the real embedding script
file(WRITE ${OUT} "/* generated */\nint sfa__embedded_placeholder;\n")
