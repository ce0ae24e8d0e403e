// lathe's error type: every failure a user can fix (bad input, missing file, bad config)
// is thrown as lathe::Error with a message that names the file, key or rank concerned.
#pragma once

#include <stdexcept>
#include <string>

namespace lathe {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace lathe
