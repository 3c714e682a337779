print("npa")
